//! The JSON line of each log event, written straight into the output: the
//! same shape as `tracing-subscriber`'s JSON format with flattened fields
//! (`{"timestamp":…,"level":…,"message":…,<fields>,"target":…}`), at a
//! fraction of its cost, which went into building a serde map per event.
//! The access log writes one of these per request.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as JSON lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line, SystemTime::now());
        line.push_str("\",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push('"');
        event.record(&mut Fields { line: &mut line, scratch: String::new() });
        line.push_str(",\"target\":");
        string(&mut line, event.metadata().target());
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

struct Fields<'a> {
    line: &'a mut String,
    /// For values that only format themselves.
    scratch: String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        string(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.line, "{value}");
            // `1` prints as `1`; keep it a float, as serde_json would.
            if value.fract() == 0.0 && value.abs() < 1e16 {
                self.line.push_str(".0");
            }
        } else {
            self.line.push_str("null");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.line, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        string(self.line, &self.scratch);
    }
}

/// `text` as a JSON string.
fn string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// RFC 3339 in UTC with microseconds: `2026-12-02T06:06:01.025708Z`.
fn timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let of_day = seconds % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_micros()
    );
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative days).
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc_3339_utc_with_microseconds() {
        let at = |secs: u64, micros: u64| {
            let mut out = String::new();
            timestamp(&mut out, UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros));
            out
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        // 2026-12-02T06:06:01.025708Z
        assert_eq!(at(1_796_191_561, 25_708), "2026-12-02T06:06:01.025708Z");
        // Leap days and the end of a century year.
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }

    #[test]
    fn strings_are_escaped_as_json_requires() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\te\u{1}f é");
        assert_eq!(out, r#""a\"b\\c\nd\te\u0001f é""#);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a\"b\\c\nd\te\u{1}f é");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_become_the_same_json_as_tracing_subscribers_flattened_format() {
        let ours = Captured::default();
        let theirs = Captured::default();
        let emit = || {
            let error = "upstream said \"no\"";
            tracing::info!(
                target: "switchyard::access",
                request_id = "req_1",
                status = 200u64,
                attempts = 2i64,
                fallback = true,
                duration_ms = 1.25f64,
                whole = 3.0f64,
                cost_usd = None::<f64>,
                error = %error,
                debugged = ?vec![1, 2],
                "request served"
            );
        };
        let writer = ours.clone();
        let subscriber = tracing_subscriber::fmt().event_format(JsonLines).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, emit);
        let writer = theirs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);

        let parse = |captured: &Captured| -> serde_json::Value {
            let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "one line: {text:?}");
            serde_json::from_str(&text).unwrap()
        };
        let (mut ours, mut theirs) = (parse(&ours), parse(&theirs));
        for line in [&ours, &theirs] {
            let stamp = line["timestamp"].as_str().unwrap();
            assert_eq!(stamp.len(), "2026-12-02T06:06:01.025708Z".len(), "{stamp}");
        }
        ours.as_object_mut().unwrap().remove("timestamp");
        theirs.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(ours, theirs);
        assert_eq!(ours["message"], "request served");
        assert_eq!(ours["error"], "upstream said \"no\"");
        assert_eq!(ours["target"], "switchyard::access");
    }
}
