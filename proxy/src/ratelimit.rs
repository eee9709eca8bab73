//! Rate-limit headers in one provider-neutral form (provider-protocols §10.2).
//!
//! Read from an upstream's answer: OpenAI's and Azure's
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (resets as Go-style
//! durations such as `6s`, `12ms`, `1m0s`; Azure sends no resets) and
//! Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`
//! (resets as RFC 3339 timestamps; `input-tokens` stands in when `tokens` is
//! absent). Written to clients as OpenAI's `x-ratelimit-*` headers, resets as
//! OpenAI's duration strings, on answers from that upstream and on the
//! proxy's own 429s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::client::Headers;

/// One limit: how many per window, how many are left, when it refills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Time until the window is full again.
    pub reset: Option<Duration>,
}

impl Window {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// An upstream's (or the proxy's own) request and token limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub requests: Window,
    pub tokens: Window,
}

const OPENAI_PREFIX: &str = "x-ratelimit-";
const ANTHROPIC_PREFIX: &str = "anthropic-ratelimit-";

impl RateLimits {
    /// The limits an answer's headers name; `None` (after one scan of the
    /// header names, without allocating) when it names none.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        let starts = |name: &[u8], prefix: &str| {
            name.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
        };
        let (mut openai, mut anthropic) = (false, false);
        for (name, _) in headers.iter() {
            openai |= starts(name, OPENAI_PREFIX);
            anthropic |= starts(name, ANTHROPIC_PREFIX);
        }
        let limits = if openai {
            let window = |kind: &str| Window {
                limit: number(headers, &format!("{OPENAI_PREFIX}limit-{kind}")),
                remaining: number(headers, &format!("{OPENAI_PREFIX}remaining-{kind}")),
                reset: text(headers, &format!("{OPENAI_PREFIX}reset-{kind}")).and_then(parse_duration),
            };
            Self { requests: window("requests"), tokens: window("tokens") }
        } else if anthropic {
            let now = SystemTime::now();
            let window = |kind: &str| Window {
                limit: number(headers, &format!("{ANTHROPIC_PREFIX}{kind}-limit")),
                remaining: number(headers, &format!("{ANTHROPIC_PREFIX}{kind}-remaining")),
                reset: text(headers, &format!("{ANTHROPIC_PREFIX}{kind}-reset")).and_then(|t| until(t, now)),
            };
            let tokens = window("tokens");
            let tokens = if tokens.is_empty() { window("input-tokens") } else { tokens };
            Self { requests: window("requests"), tokens }
        } else {
            return None;
        };
        (!(limits.requests.is_empty() && limits.tokens.is_empty())).then_some(limits)
    }

    /// Adds OpenAI's `x-ratelimit-*` headers for every known value.
    pub fn write(&self, headers: &mut HeaderMap) {
        for (kind, window) in [("requests", &self.requests), ("tokens", &self.tokens)] {
            let mut put = |field: &str, value: String| {
                if let (Ok(name), Ok(value)) =
                    (HeaderName::try_from(format!("{OPENAI_PREFIX}{field}-{kind}")), HeaderValue::try_from(value))
                {
                    headers.insert(name, value);
                }
            };
            if let Some(limit) = window.limit {
                put("limit", limit.to_string());
            }
            if let Some(remaining) = window.remaining {
                put("remaining", remaining.to_string());
            }
            if let Some(reset) = window.reset {
                put("reset", format_duration(reset));
            }
        }
    }

    /// The longest reset among exhausted windows: when a request may succeed again.
    pub fn retry_after(&self) -> Option<Duration> {
        [self.requests, self.tokens].iter().filter(|w| w.remaining == Some(0)).filter_map(|w| w.reset).max()
    }
}

fn text<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers.get_str(name).map(str::trim)
}

fn number(headers: &Headers, name: &str) -> Option<u64> {
    text(headers, name)?.parse().ok()
}

/// Time from `now` until an RFC 3339 timestamp (zero once it has passed).
fn until(timestamp: &str, now: SystemTime) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    let at_ms = u64::try_from(at.timestamp_millis()).ok()?;
    let now_ms = u64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

/// A Go-style duration as OpenAI sends it: `6s`, `12ms`, `1m0s`, `1.5s`,
/// `2h3m4s` (units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit] {
            "h" => 3_600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit..];
        total += value * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A duration as OpenAI writes it: `12ms` below a second, otherwise
/// `6s`, `1.5s`, `1m0s`, `2h3m4s`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (hours, minutes, seconds, millis) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1_000 % 60, ms % 1_000);
    let seconds = if millis == 0 {
        format!("{seconds}s")
    } else {
        format!("{seconds}.{}s", format!("{millis:03}").trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    #[test]
    fn openai_headers_are_read_with_duration_resets() {
        let limits = RateLimits::from_headers(&headers(&[
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-limit-tokens", "30000000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-remaining-tokens", "29999000"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-reset-tokens", "1m0s"),
        ]))
        .unwrap();
        assert_eq!(
            limits.requests,
            Window { limit: Some(10_000), remaining: Some(9_999), reset: Some(Duration::from_millis(6)) }
        );
        assert_eq!(
            limits.tokens,
            Window { limit: Some(30_000_000), remaining: Some(29_999_000), reset: Some(Duration::from_secs(60)) }
        );
    }

    #[test]
    fn azure_headers_without_resets_are_read() {
        let limits = RateLimits::from_headers(&headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "1200"),
            ("retry-after", "7"),
        ]))
        .unwrap();
        assert_eq!(limits.requests, Window { limit: None, remaining: Some(0), reset: None });
        assert_eq!(limits.tokens.remaining, Some(1200));
        assert_eq!(limits.retry_after(), None);
    }

    #[test]
    fn anthropic_headers_are_read_with_rfc3339_resets() {
        let in_30s = chrono::DateTime::<chrono::Utc>::from(SystemTime::now() + Duration::from_secs(30)).to_rfc3339();
        let limits = RateLimits::from_headers(&headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", &in_30s),
            ("anthropic-ratelimit-tokens-limit", "80000"),
            ("anthropic-ratelimit-tokens-remaining", "79000"),
            ("anthropic-ratelimit-tokens-reset", "2020-01-01T00:00:00Z"),
        ]))
        .unwrap();
        assert_eq!(limits.requests.limit, Some(50));
        assert_eq!(limits.requests.remaining, Some(0));
        let reset = limits.requests.reset.unwrap();
        assert!(reset <= Duration::from_secs(30) && reset > Duration::from_secs(20), "{reset:?}");
        // A reset in the past means the window is already full again.
        assert_eq!(limits.tokens.reset, Some(Duration::ZERO));
        assert_eq!(limits.retry_after(), Some(reset));
    }

    #[test]
    fn anthropic_input_tokens_stand_in_for_tokens() {
        let limits = RateLimits::from_headers(&headers(&[
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "39000"),
        ]))
        .unwrap();
        assert_eq!(limits.tokens, Window { limit: Some(40_000), remaining: Some(39_000), reset: None });
    }

    #[test]
    fn header_names_are_matched_in_any_case() {
        let limits = RateLimits::from_headers(&headers(&[("X-RateLimit-Remaining-Requests", "3")])).unwrap();
        assert_eq!(limits.requests.remaining, Some(3));
    }

    #[test]
    fn answers_without_rate_limit_headers_have_none() {
        assert_eq!(RateLimits::from_headers(&headers(&[("content-type", "application/json")])), None);
        assert_eq!(RateLimits::from_headers(&headers(&[("x-ratelimit-remaining-requests", "many")])), None);
    }

    #[test]
    fn limits_are_written_as_openai_headers() {
        let limits = RateLimits {
            requests: Window { limit: Some(60), remaining: Some(0), reset: Some(Duration::from_millis(61_500)) },
            tokens: Window { limit: None, remaining: Some(5), reset: None },
        };
        let mut out = HeaderMap::new();
        limits.write(&mut out);
        assert_eq!(out["x-ratelimit-limit-requests"], "60");
        assert_eq!(out["x-ratelimit-remaining-requests"], "0");
        assert_eq!(out["x-ratelimit-reset-requests"], "1m1.5s");
        assert_eq!(out["x-ratelimit-remaining-tokens"], "5");
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn durations_round_trip_in_openai_form() {
        for (text, duration) in [
            ("12ms", Duration::from_millis(12)),
            ("6s", Duration::from_secs(6)),
            ("1.5s", Duration::from_millis(1_500)),
            ("1m0s", Duration::from_secs(60)),
            ("2h3m4s", Duration::from_secs(7_384)),
        ] {
            assert_eq!(parse_duration(text), Some(duration), "{text}");
            assert_eq!(format_duration(duration), text);
        }
        assert_eq!(parse_duration("500us"), Some(Duration::from_micros(500)));
        for bad in ["", "6", "s", "6x", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
