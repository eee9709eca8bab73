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
        let out = &mut writer;
        out.write_str("{\"timestamp\":\"")?;
        timestamp(out, SystemTime::now())?;
        out.write_str("\",\"level\":\"")?;
        out.write_str(event.metadata().level().as_str())?;
        out.write_char('"')?;
        let mut fields = Fields { out, scratch: String::new(), result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        out.write_str(",\"target\":")?;
        string(out, event.metadata().target())?;
        out.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`. Lines go straight into the
/// subscriber's buffer: no line of our own to allocate and copy.
struct Fields<'a, W> {
    out: &'a mut W,
    /// For values that only format themselves.
    scratch: String,
    /// The first write error; `Visit` cannot return one.
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn put(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = entry(self.out, field.name(), value);
        }
    }
}

/// One field: `,"name":value`.
fn entry<W: fmt::Write>(out: &mut W, name: &str, value: impl FnOnce(&mut W) -> fmt::Result) -> fmt::Result {
    out.write_char(',')?;
    string(out, name)?;
    out.write_char(':')?;
    value(out)
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    /// As serde_json writes floats (`1.0`, `1.25`, `1e16`); not finite: `null`.
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |out| match value.is_finite() {
            true => out.write_str(ryu::Buffer::new().format_finite(value)),
            false => out.write_str("null"),
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |out| out.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |out| out.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |out| out.write_str(if value { "true" } else { "false" }));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |out| string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let _ = write!(scratch, "{value:?}");
        self.put(field, |out| string(out, &scratch));
        self.scratch = scratch;
    }
}

/// `text` as a JSON string.
fn string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
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
        out.write_str(&text[start..i])?;
        if escape.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_str(escape)?;
        }
        start = i + 1;
    }
    out.write_str(&text[start..])?;
    out.write_char('"')
}

/// RFC 3339 in UTC with microseconds: `2026-12-02T06:06:01.025708Z`.
fn timestamp(out: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let of_day = seconds % 86_400;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut digits = |at: usize, width: usize, mut value: u64| {
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + u8::try_from(value % 10).unwrap_or(0);
            value /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, month);
    digits(8, 2, day);
    digits(11, 2, of_day / 3600);
    digits(14, 2, of_day % 3600 / 60);
    digits(17, 2, of_day % 60);
    digits(20, 6, u64::from(since.subsec_micros()));
    out.write_str(std::str::from_utf8(&text).unwrap_or_default())
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
            timestamp(&mut out, UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)).unwrap();
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
        string(&mut out, "a\"b\\c\nd\te\u{1}f é").unwrap();
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
                large = 1e17f64,
                tiny = 1.5e-7f64,
                below = -7i64,
                huge = u64::MAX,
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
