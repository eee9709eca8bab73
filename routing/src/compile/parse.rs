//! Hand-written parsers for the string formats of the API: durations,
//! percentages, fractions, decimals and names.
//!
//! Each one accepts exactly what the matching schema pattern in
//! [`crate::api`] accepts (this crate has no regex engine), and converts to
//! the integer units of the table.

use crate::table::FULL_SHARE;

/// Parses a duration such as `250ms`, `30s`, `5m` or `1h30m` into milliseconds.
///
/// Accepts [`crate::api::DURATION_PATTERN`]: one or more `<digits><unit>`
/// with unit `ms`, `s`, `m` or `h`. Returns `None` for anything else and on
/// overflow.
pub fn duration_ms(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut value: u64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            value = value.checked_mul(10)?.checked_add(u64::from(bytes[i] - b'0'))?;
            i += 1;
        }
        if i == start {
            return None;
        }
        let factor = match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'm'), Some(b's')) => {
                i += 2;
                1
            }
            (Some(b's'), _) => {
                i += 1;
                1_000
            }
            (Some(b'm'), _) => {
                i += 1;
                60_000
            }
            (Some(b'h'), _) => {
                i += 1;
                3_600_000
            }
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(factor)?)?;
    }
    Some(total)
}

/// Parses a percentage with at most two decimals, 0 to 100, into basis points
/// (`"5"` → 500, `"0.01"` → 1, `"100"` → [`FULL_SHARE`]).
///
/// Accepts [`crate::api::PERCENT_PATTERN`].
pub fn percent_bp(text: &str) -> Option<u32> {
    let (int, frac) = fixed_point(text, 2, 3)?;
    let bp = int.checked_mul(100)?.checked_add(frac)?;
    // The pattern allows "100" but not "100.5", and at most two integer
    // digits below 100.
    if bp > u64::from(FULL_SHARE) || (int < 100 && text.split('.').next().is_some_and(|i| i.len() > 2)) {
        return None;
    }
    u32::try_from(bp).ok()
}

/// Parses a fraction 0 to 1 with at most six decimals into parts per million
/// (`"0.05"` → 50 000, `"1"` → 1 000 000).
///
/// Accepts [`crate::api::FRACTION_PATTERN`].
pub fn fraction_ppm(text: &str) -> Option<u32> {
    let int_digits = text.split('.').next()?;
    if int_digits.len() != 1 {
        return None;
    }
    let (int, frac) = fixed_point(text, 6, 1)?;
    let ppm = int.checked_mul(1_000_000)?.checked_add(frac)?;
    if ppm > 1_000_000 {
        return None;
    }
    u32::try_from(ppm).ok()
}

/// Checks a non-negative decimal such as `0.15` (prices).
///
/// Accepts [`crate::api::DECIMAL_PATTERN`]: up to nine digits, optionally a
/// dot and up to nine more.
pub fn is_decimal(text: &str) -> bool {
    fixed_point(text, 9, 9).is_some()
}

/// Splits `<int>[.<frac>]` into the integer part and the fraction scaled to
/// `scale` digits. At most `max_int_digits` integer digits and `scale`
/// fraction digits; both parts must be non-empty when present.
fn fixed_point(text: &str, scale: u32, max_int_digits: usize) -> Option<(u64, u64)> {
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (text, None),
    };
    if int.is_empty() || int.len() > max_int_digits || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let frac = match frac {
        None => 0,
        Some(frac) => {
            let len = u32::try_from(frac.len()).ok()?;
            if frac.is_empty() || len > scale || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            frac.parse::<u64>().ok()?.checked_mul(10u64.pow(scale - len))?
        }
    };
    Some((int, frac))
}

/// An RFC 1123 DNS label: at most 63 of `[a-z0-9-]`, starting and ending
/// with a letter or digit ([`crate::api::DNS_LABEL_PATTERN`]).
pub fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(|b| *b != b'-')
        && bytes.last().is_some_and(|b| *b != b'-')
}

/// An RFC 1123 DNS subdomain: dot-separated DNS labels, at most 253
/// characters ([`crate::api::DNS_SUBDOMAIN_PATTERN`]).
pub fn is_dns_subdomain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            // Labels inside a subdomain are not limited to 63 by the pattern.
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes.first().is_some_and(|b| *b != b'-')
                && bytes.last().is_some_and(|b| *b != b'-')
        })
}

/// Printable ASCII without spaces, 1 to `max` characters
/// ([`crate::api::MODEL_ID_PATTERN`]).
pub fn is_model_id(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// An HTTP header name: an RFC 9110 token ([`crate::api::HEADER_NAME_PATTERN`]).
pub fn is_header_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A key of a Secret's data: `[-._a-zA-Z0-9]+`, at most 253 characters.
pub fn is_secret_key(text: &str) -> bool {
    !text.is_empty() && text.len() <= 253 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// An Azure `api-version`: `YYYY-MM-DD` with an optional `-preview`.
pub fn is_azure_api_version(text: &str) -> bool {
    let date = text.strip_suffix("-preview").unwrap_or(text);
    let bytes = date.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() })
}

/// A base URL: `http://` or `https://`, a host, an optional path, no query,
/// fragment or whitespace ([`crate::api::BASE_URL_PATTERN`]).
pub fn is_base_url(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")) else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    !host.is_empty() && !text.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
}

/// Makes a DNS label out of anything: lowercase, every run of other
/// characters becomes one `-`, no `-` at either end, at most 63 characters.
/// Returns `target` when nothing usable is left.
pub fn dns_label_from(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(63));
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(63);
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { "target".to_owned() } else { out }
}

/// Quotes user input for a message, cut to a readable length.
pub fn shown(text: &str) -> String {
    const MAX: usize = 64;
    if text.is_empty() {
        "an empty string".to_owned()
    } else if text.chars().count() <= MAX {
        format!("`{text}`")
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("`{cut}…`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert_each_unit_to_milliseconds() {
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms("30s"), Some(30_000));
        assert_eq!(duration_ms("5m"), Some(300_000));
        assert_eq!(duration_ms("1h"), Some(3_600_000));
        assert_eq!(duration_ms("0s"), Some(0));
    }

    #[test]
    fn durations_add_up_their_components_in_any_order() {
        assert_eq!(duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(duration_ms("1m30s"), Some(90_000));
        assert_eq!(duration_ms("30s500ms"), Some(30_500));
        assert_eq!(duration_ms("1m1ms"), Some(60_001));
        assert_eq!(duration_ms("5m5m"), Some(600_000));
    }

    #[test]
    fn durations_reject_what_the_schema_pattern_rejects() {
        for bad in ["", "5", "ms", "1.5s", "-1s", "1 s", "1d", "1S", "10sec", "1h30", "s5", "1us", " 1s", "1s "] {
            assert_eq!(duration_ms(bad), None, "{bad:?} should be rejected");
        }
    }

    #[test]
    fn durations_that_overflow_are_rejected_not_wrapped() {
        assert_eq!(duration_ms("99999999999999999999ms"), None);
        assert_eq!(duration_ms("9999999999999999h"), None);
        assert_eq!(duration_ms(&format!("{}ms{}ms", u64::MAX, 1)), None);
    }

    #[test]
    fn percents_convert_to_basis_points() {
        assert_eq!(percent_bp("0"), Some(0));
        assert_eq!(percent_bp("0.01"), Some(1));
        assert_eq!(percent_bp("0.1"), Some(10));
        assert_eq!(percent_bp("5"), Some(500));
        assert_eq!(percent_bp("12.34"), Some(1_234));
        assert_eq!(percent_bp("99.99"), Some(9_999));
        assert_eq!(percent_bp("100"), Some(FULL_SHARE));
        assert_eq!(percent_bp("100.0"), Some(FULL_SHARE));
        assert_eq!(percent_bp("100.00"), Some(FULL_SHARE));
        assert_eq!(percent_bp("05"), Some(500));
    }

    #[test]
    fn percents_reject_more_than_two_decimals_and_values_over_100() {
        for bad in [
            "", "12.345", "100.01", "100.5", "101", "1000", "-1", "+5", "5%", ".5", "5.", "1e2", " 5", "five", "005",
            "100.000",
        ] {
            assert_eq!(percent_bp(bad), None, "{bad:?} should be rejected");
        }
    }

    #[test]
    fn fractions_convert_to_parts_per_million() {
        assert_eq!(fraction_ppm("0"), Some(0));
        assert_eq!(fraction_ppm("0.0"), Some(0));
        assert_eq!(fraction_ppm("0.05"), Some(50_000));
        assert_eq!(fraction_ppm("0.000001"), Some(1));
        assert_eq!(fraction_ppm("1"), Some(1_000_000));
        assert_eq!(fraction_ppm("1.000000"), Some(1_000_000));
    }

    #[test]
    fn fractions_reject_values_over_one_and_too_many_decimals() {
        for bad in ["", "1.1", "1.000001", "2", "0.0000001", "5%", ".5", "00.5", "0.", "-0.1", "10"] {
            assert_eq!(fraction_ppm(bad), None, "{bad:?} should be rejected");
        }
    }

    #[test]
    fn decimals_accept_prices_and_reject_currency_signs() {
        for good in ["0", "0.15", "15", "2.5", "123456789.123456789"] {
            assert!(is_decimal(good), "{good:?} should be accepted");
        }
        for bad in ["", "$1", "1,5", "-1", ".5", "1.", "1e3", "1234567890", "0.1234567890"] {
            assert!(!is_decimal(bad), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn default_target_names_are_dns_labels() {
        assert_eq!(dns_label_from("openai-prod-gpt-4o-mini"), "openai-prod-gpt-4o-mini");
        assert_eq!(dns_label_from("anthropic-claude-3.5-sonnet"), "anthropic-claude-3-5-sonnet");
        assert_eq!(dns_label_from("vllm-meta-llama/Llama-3.1-8B"), "vllm-meta-llama-llama-3-1-8b");
        assert_eq!(dns_label_from("--Weird__Name--"), "weird-name");
        assert_eq!(dns_label_from("___"), "target");
        let long = dns_label_from(&"a-".repeat(100));
        assert!(long.len() <= 63 && is_dns_label(&long), "{long}");
    }

    #[test]
    fn name_checks_follow_kubernetes_rules() {
        assert!(is_dns_label("gpt-4o"));
        assert!(!is_dns_label("GPT"));
        assert!(!is_dns_label("-gpt"));
        assert!(!is_dns_label("gpt-"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("openai.prod"));
        assert!(!is_dns_subdomain("openai..prod"));
        assert!(!is_dns_subdomain("Openai"));
        assert!(is_header_name("OpenAI-Organization"));
        assert!(!is_header_name("bad header"));
        assert!(!is_header_name("bad:header"));
        assert!(is_model_id("meta-llama/Llama-3.1-8B:latest", 256));
        assert!(!is_model_id("gpt 4", 256));
        assert!(is_azure_api_version("2024-10-21"));
        assert!(is_azure_api_version("2025-01-01-preview"));
        assert!(!is_azure_api_version("2024-1-21"));
    }

    #[test]
    fn base_urls_need_a_scheme_and_a_host() {
        assert!(is_base_url("https://api.openai.com/v1"));
        assert!(is_base_url("http://vllm:8000/v1/"));
        assert!(!is_base_url("api.openai.com"));
        assert!(!is_base_url("https://"));
        assert!(!is_base_url("https:///v1"));
        assert!(!is_base_url("ftp://host"));
        assert!(!is_base_url("https://host/v1?x=1"));
        assert!(!is_base_url("https://host name"));
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        assert_eq!(shown("abc"), "`abc`");
        assert_eq!(shown(""), "an empty string");
        let cut = shown(&"x".repeat(500));
        assert!(cut.len() < 80 && cut.ends_with("…`"), "{cut}");
    }
}
