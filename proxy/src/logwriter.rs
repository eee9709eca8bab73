//! Where log lines go: a shared buffer that a background thread writes to
//! stderr every [`FLUSH_INTERVAL`], or at once when it holds
//! [`FLUSH_BYTES`] or a line at `WARN` or above arrives.
//!
//! One JSON access line per request is the proxy's most frequent write. A
//! channel to a writer thread (what `tracing-appender` does) wakes that
//! thread for nearly every line; on a busy core each wake is a context
//! switch, which cost more than the proxying itself. Appending to a buffer
//! under an uncontended lock does not. Nothing is dropped: when the buffer
//! reaches [`MAX_BYTES`] because stderr cannot keep up, writers wait.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A buffer this full is written without waiting for the interval.
const FLUSH_BYTES: usize = 64 * 1024;
/// Writers wait while the buffer holds this much.
const MAX_BYTES: usize = 8 * 1024 * 1024;

struct Shared {
    state: Mutex<State>,
    interval: Duration,
    /// Wakes the writer thread early.
    wake: Condvar,
    /// Wakes writers waiting for room.
    drained: Condvar,
}

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    urgent: bool,
    stopping: bool,
}

/// The buffer's writing end, for `tracing_subscriber::fmt().with_writer`.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread and writes what is left when dropped.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A buffer written to `out` by a thread named `log-writer`.
pub fn spawn(out: impl Write + Send + 'static) -> io::Result<(LogWriter, Guard)> {
    spawn_with(out, FLUSH_INTERVAL)
}

fn spawn_with(out: impl Write + Send + 'static, interval: Duration) -> io::Result<(LogWriter, Guard)> {
    let shared = Arc::new(Shared { state: Mutex::default(), interval, wake: Condvar::new(), drained: Condvar::new() });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new().name("log-writer".into()).spawn(move || run(&shared, out))?
    };
    Ok((LogWriter { shared: shared.clone() }, Guard { shared, thread: Some(thread) }))
}

fn run(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::new();
    loop {
        let stopping = {
            let mut state = shared.lock();
            if !state.stopping && !state.urgent && state.buffer.len() < FLUSH_BYTES {
                state = shared.wake.wait_timeout(state, shared.interval).unwrap_or_else(PoisonError::into_inner).0;
            }
            std::mem::swap(&mut state.buffer, &mut spare);
            state.urgent = false;
            state.stopping
        };
        shared.drained.notify_all();
        if !spare.is_empty() {
            // Nowhere to report a failed write to stderr.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
        }
        if stopping {
            return;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LogWriter {
    fn append(&self, bytes: &[u8], urgent: bool) {
        let mut state = self.shared.lock();
        while state.buffer.len() >= MAX_BYTES && !state.stopping {
            state = self.shared.drained.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        // Wake the writer once, when a reason to write early appears: each
        // wake is a system call, and until the writer runs every line after
        // the first would make another one.
        let was_due = state.urgent || state.buffer.len() >= FLUSH_BYTES;
        state.buffer.extend_from_slice(bytes);
        state.urgent |= urgent;
        let wake = !was_due && (state.urgent || state.buffer.len() >= FLUSH_BYTES);
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

/// One event's line; `tracing-subscriber` writes a whole line in one call.
pub struct Line<'a> {
    writer: &'a LogWriter,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.writer.append(bytes, self.urgent);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { writer: self, urgent: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Line { writer: self, urgent: *meta.level() <= tracing::Level::WARN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn wait_for(sink: &Sink, want: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if sink.text().contains(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn lines_reach_the_output_in_order_and_the_guard_writes_the_rest() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone()).unwrap();
        for i in 0..1000 {
            writer.make_writer().write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(sink.text(), want);
    }

    #[test]
    fn info_lines_are_written_within_the_interval_without_a_flush() {
        let sink = Sink::default();
        let (writer, _guard) = spawn(sink.clone()).unwrap();
        writer.make_writer().write_all(b"quiet\n").unwrap();
        assert!(wait_for(&sink, "quiet\n", Duration::from_secs(10)), "the line never reached the output");
    }

    /// An interval no test waits out: only a wake writes the buffer.
    const NEVER: Duration = Duration::from_secs(3600);

    #[test]
    fn a_warning_is_written_at_once() {
        let sink = Sink::default();
        let (writer, _guard) = spawn_with(sink.clone(), NEVER).unwrap();
        writer.make_writer().write_all(b"info\n").unwrap();
        Line { writer: &writer, urgent: true }.write_all(b"warned\n").unwrap();
        assert!(wait_for(&sink, "info\nwarned\n", Duration::from_secs(10)), "the warning waited for the interval");
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let sink = Sink::default();
        let (writer, _guard) = spawn_with(sink.clone(), NEVER).unwrap();
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..(FLUSH_BYTES / 1024) {
            writer.make_writer().write_all(line.as_bytes()).unwrap();
        }
        assert!(wait_for(&sink, &line, Duration::from_secs(10)), "64 KiB of lines waited for the interval");
        assert_eq!(sink.text().len(), FLUSH_BYTES);
    }
}
