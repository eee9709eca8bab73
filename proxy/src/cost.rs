//! What a request cost: the built-in, dated price table, per-target prices
//! from the manifest, and the cost formula.
//!
//! A target's price is, in this order: its manifest `price` (which wins
//! whatever the model), or the built-in row of its provider and model, or
//! none. Without a price the proxy reports no cost for the request (no
//! `x-switchyard-cost-usd` header, nothing added to the cost counter) rather
//! than a made-up one. `docs/cost.md` lists the table's sources and dates.
//!
//! One formula covers every provider, because usage arrives in OpenAI's terms
//! (see [`TokenUsage`]: `prompt_tokens` includes cache reads and writes):
//!
//! ```text
//! (prompt − cached − cache_write) × input + cached × cached_input
//!   + cache_write × cache_write_rate + completion × output        (per million)
//! ```
//!
//! which is provider-protocols.md §12 for OpenAI, Azure and Mistral (no cache
//! writes), Anthropic (all cache writes priced as 5-minute writes, since the
//! translated usage does not split them), Gemini (cached = context-cache
//! reads, thinking inside `completion`) and Cohere (billed units).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routing::table::{ProviderKind, Target};

use crate::translate::TokenUsage;

/// The newest capture date of the built-in table.
pub const TABLE_DATE: &str = "2026-10-07";

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub input: f64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input: f64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write: f64,
    pub output: f64,
}

impl Rates {
    /// Cache reads and writes at the plain input price: what a price with
    /// no cache rates means.
    const fn flat(input: f64, output: f64) -> Self {
        Self { input, cached_input: input, cache_write: input, output }
    }

    /// An explicit cache-read price; no cache writes (OpenAI, Mistral).
    const fn cached(input: f64, cached_input: f64, output: f64) -> Self {
        Self { input, cached_input, cache_write: input, output }
    }

    /// Anthropic's four prices (5-minute cache write).
    const fn anthropic(input: f64, cache_write: f64, cache_read: f64, output: f64) -> Self {
        Self { input, cached_input: cache_read, cache_write, output }
    }

    /// Gemini: context-cache reads at a tenth of the input price.
    const fn gemini(input: f64, output: f64) -> Self {
        Self { input, cached_input: input / 10.0, cache_write: input, output }
    }

    fn cost(&self, usage: &TokenUsage) -> f64 {
        let uncached = usage.prompt_tokens.saturating_sub(usage.cached_tokens).saturating_sub(usage.cache_write_tokens);
        let per_million = uncached as f64 * self.input
            + usage.cached_tokens as f64 * self.cached_input
            + usage.cache_write_tokens as f64 * self.cache_write
            + usage.completion_tokens as f64 * self.output;
        per_million / 1_000_000.0
    }
}

/// Where a target's price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    /// The target's `price` in the manifest.
    Manifest,
    /// A row of the built-in table.
    BuiltIn {
        /// The row's model id (the target's model may carry a date suffix).
        model: &'static str,
        /// Where and when the price was read.
        source: &'static str,
    },
}

/// A target's prices, ready to price a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    pub rates: Rates,
    /// Above this many prompt tokens, these rates (Gemini's long-prompt tier).
    pub long_prompt: Option<(u64, Rates)>,
    /// From this time on, these rates (an announced price change).
    pub change: Option<(SystemTime, Rates)>,
    pub source: PriceSource,
}

impl Pricing {
    /// The price of `target` at a provider of kind `kind`, if one is known.
    pub fn for_target(kind: ProviderKind, target: &Target) -> Option<Pricing> {
        if let Some(price) = &target.price {
            let input = price.input_per_million.parse::<f64>().ok()?;
            let output = price.output_per_million.parse::<f64>().ok()?;
            let rate = |value: &Option<String>| value.as_deref().and_then(|v| v.parse::<f64>().ok()).unwrap_or(input);
            let rates = Rates {
                input,
                cached_input: rate(&price.cached_input_per_million),
                cache_write: rate(&price.cache_write_per_million),
                output,
            };
            return Some(Pricing { rates, long_prompt: None, change: None, source: PriceSource::Manifest });
        }
        if kind == ProviderKind::Mock {
            return Some(Pricing {
                rates: Rates::flat(0.0, 0.0),
                long_prompt: None,
                change: None,
                source: PriceSource::BuiltIn { model: "*", source: "the mock provider is free" },
            });
        }
        let model = target.model.strip_prefix("models/").unwrap_or(&target.model);
        // The longest matching id: `claude-opus-4-5-20251101` is Opus 4.5, not Opus 4 with a suffix.
        let row = TABLE
            .iter()
            .filter(|row| row.kinds.contains(&kind) && matches_row(model, row.model))
            .max_by_key(|row| row.model.len())?;
        Some(Pricing {
            rates: row.rates,
            long_prompt: row.long_prompt,
            change: row.change.map(|(days, rates)| (UNIX_EPOCH + Duration::from_secs(days * 86_400), rates)),
            source: PriceSource::BuiltIn { model: row.model, source: row.source },
        })
    }

    /// The rates in force for a request of `prompt_tokens` at `now`.
    pub fn rates_at(&self, prompt_tokens: u64, now: SystemTime) -> Rates {
        let base = match self.change {
            Some((from, rates)) if now >= from => rates,
            _ => self.rates,
        };
        match self.long_prompt {
            Some((over, rates)) if prompt_tokens > over => rates,
            _ => base,
        }
    }

    /// USD for `usage`, at today's rates.
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        self.rates_at(usage.prompt_tokens, SystemTime::now()).cost(usage)
    }
}

/// `model` is the row's id itself, or the id with a version or date suffix
/// (`gpt-4o-mini-2024-07-18`, `claude-haiku-4-5-20251001`,
/// `claude-sonnet-4-5@20250929`, `mistral-small-2506`, `command-r-08-2024`)
/// or `-latest`. A suffix must have four digits or more, so that
/// `claude-opus-4-9` is not priced as `claude-opus-4`, nor `gpt-5-mini` as
/// `gpt-5`.
fn matches_row(model: &str, row: &str) -> bool {
    let Some(rest) = model.strip_prefix(row) else { return false };
    if rest.is_empty() {
        return true;
    }
    let Some(suffix) = rest.strip_prefix('-').or_else(|| rest.strip_prefix('@')) else { return false };
    suffix == "latest"
        || (suffix.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            && suffix.bytes().filter(u8::is_ascii_digit).count() >= 4)
}

/// USD as a plain decimal with up to ten places (`0.0000105`), for the
/// response header and the log.
pub fn format_usd(usd: f64) -> String {
    let text = format!("{usd:.10}");
    let text = text.trim_end_matches('0');
    text.strip_suffix('.').map_or_else(|| text.to_owned(), |whole| format!("{whole}.0"))
}

/// One row of the built-in table.
struct Row {
    kinds: &'static [ProviderKind],
    model: &'static str,
    rates: Rates,
    long_prompt: Option<(u64, Rates)>,
    /// Days since the Unix epoch from which `rates` are replaced.
    change: Option<(u64, Rates)>,
    source: &'static str,
}

const OPENAI: &[ProviderKind] = &[ProviderKind::Openai];
const ANTHROPIC: &[ProviderKind] = &[ProviderKind::Anthropic];
const GEMINI: &[ProviderKind] = &[ProviderKind::Gemini];
const MISTRAL: &[ProviderKind] = &[ProviderKind::Mistral];
const COHERE: &[ProviderKind] = &[ProviderKind::Cohere];

const OPENAI_SOURCE: &str = "OpenAI API pricing page, read 2026-05-04 (updated 2026-05-22)";
const OPENAI_OLDER_SOURCE: &str =
    "OpenAI API pricing page, read 2026-05-04; cross-checked against a LiteLLM-derived price file of 2026-07-24";
const ANTHROPIC_SOURCE: &str = "Anthropic pricing and model pages, captured 2026-09";
const ANTHROPIC_NEWER_SOURCE: &str =
    "Anthropic model pages, captured 2026-10; API id inferred from third-party listings";
const ANTHROPIC_NEWER_NO_CACHE_SOURCE: &str = "Anthropic model pages, captured 2026-10; API id inferred from third-party listings; cache rates not published, standard multipliers (write 1.25x, read 0.1x) assumed";
const GEMINI_SOURCE: &str = "Gemini API pricing page (paid tier), read 2026-10-07; cache reads assumed at 10% of input";
const GEMINI_LITELLM_SOURCE: &str = "Gemini API pricing page (paid tier), read 2026-10-07, with rates missing there from a LiteLLM-derived price file of 2026-07-24; cache reads assumed at 10% of input";
const MISTRAL_SOURCE: &str = "low confidence: third-party summaries of Mistral's prices, 2026-06";
const COHERE_SOURCE: &str = "low confidence: Cohere's pricing page as remembered from 2025, unverified";

/// 2027-01-01, when gemini-3.8-flash's promotional price ends.
const DAYS_TO_2027: u64 = 20_819;

/// A plain row.
const fn row(kinds: &'static [ProviderKind], model: &'static str, rates: Rates, source: &'static str) -> Row {
    Row { kinds, model, rates, long_prompt: None, change: None, source }
}

/// USD per million tokens, standard tier, from provider-protocols.md §12.
const TABLE: &[Row] = &[
    // OpenAI
    row(OPENAI, "gpt-5.5", Rates::cached(5.00, 0.50, 30.00), OPENAI_SOURCE),
    row(OPENAI, "gpt-5.5-pro", Rates::flat(30.00, 180.00), OPENAI_SOURCE),
    row(OPENAI, "gpt-5.4", Rates::cached(2.50, 0.25, 15.00), OPENAI_SOURCE),
    row(OPENAI, "gpt-5.4-mini", Rates::cached(0.75, 0.075, 4.50), OPENAI_SOURCE),
    row(OPENAI, "gpt-5.4-nano", Rates::cached(0.20, 0.02, 1.25), OPENAI_SOURCE),
    row(OPENAI, "gpt-5", Rates::cached(1.25, 0.125, 10.00), OPENAI_SOURCE),
    row(OPENAI, "gpt-5.1", Rates::cached(1.25, 0.125, 10.00), OPENAI_SOURCE),
    row(OPENAI, "gpt-5-mini", Rates::cached(0.25, 0.025, 2.00), OPENAI_SOURCE),
    row(OPENAI, "gpt-4.1", Rates::cached(2.00, 0.50, 8.00), OPENAI_OLDER_SOURCE),
    row(OPENAI, "gpt-4.1-mini", Rates::cached(0.40, 0.10, 1.60), OPENAI_OLDER_SOURCE),
    row(OPENAI, "gpt-4o-mini", Rates::cached(0.15, 0.075, 0.60), OPENAI_OLDER_SOURCE),
    row(OPENAI, "text-embedding-3-small", Rates::flat(0.02, 0.0), OPENAI_SOURCE),
    row(OPENAI, "text-embedding-3-large", Rates::flat(0.13, 0.0), OPENAI_SOURCE),
    // Anthropic
    row(ANTHROPIC, "claude-opus-5-5", Rates::anthropic(4.00, 5.00, 0.40, 20.00), ANTHROPIC_NEWER_NO_CACHE_SOURCE),
    row(ANTHROPIC, "claude-opus-5", Rates::anthropic(5.00, 6.25, 0.50, 25.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-opus-4-8", Rates::anthropic(5.00, 6.25, 0.50, 25.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-opus-4-7", Rates::anthropic(5.00, 6.25, 0.50, 25.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-opus-4-6", Rates::anthropic(5.00, 6.25, 0.50, 25.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-opus-4-5", Rates::anthropic(5.00, 6.25, 0.50, 25.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-sonnet-5-5", Rates::anthropic(2.00, 2.50, 0.20, 10.00), ANTHROPIC_NEWER_SOURCE),
    row(ANTHROPIC, "claude-sonnet-5", Rates::anthropic(2.00, 2.50, 0.20, 10.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-sonnet-4-6", Rates::anthropic(3.00, 3.75, 0.30, 15.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-sonnet-4-5", Rates::anthropic(3.00, 3.75, 0.30, 15.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-haiku-4-5", Rates::anthropic(1.00, 1.25, 0.10, 5.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-fable-5-1", Rates::anthropic(10.00, 12.50, 0.25, 50.00), ANTHROPIC_NEWER_SOURCE),
    row(ANTHROPIC, "claude-opus-4-1", Rates::anthropic(15.00, 18.75, 1.50, 75.00), ANTHROPIC_SOURCE),
    row(ANTHROPIC, "claude-opus-4", Rates::anthropic(15.00, 18.75, 1.50, 75.00), ANTHROPIC_SOURCE),
    // Gemini (AI Studio, paid tier)
    Row {
        kinds: GEMINI,
        model: "gemini-3.8-flash",
        rates: Rates::gemini(0.75, 3.75),
        long_prompt: None,
        change: Some((DAYS_TO_2027, Rates::gemini(1.50, 7.50))),
        source: "Gemini API pricing page (paid tier), read 2026-10-07: promotional through 2026-12-31, 1.50 / 7.50 from 2027-01-01; cache reads assumed at 10% of input",
    },
    row(GEMINI, "gemini-3.5-flash", Rates::gemini(1.50, 9.00), GEMINI_SOURCE),
    row(GEMINI, "gemini-3.5-flash-lite", Rates::gemini(0.30, 2.50), GEMINI_SOURCE),
    Row {
        kinds: GEMINI,
        model: "gemini-3.1-pro-preview",
        rates: Rates::gemini(2.00, 12.00),
        long_prompt: Some((200_000, Rates::gemini(4.00, 18.00))),
        change: None,
        source: GEMINI_SOURCE,
    },
    Row {
        kinds: GEMINI,
        model: "gemini-2.5-pro",
        rates: Rates::gemini(1.25, 10.00),
        // The long-prompt output rate was not captured: the base rate is kept.
        long_prompt: Some((200_000, Rates::gemini(2.50, 10.00))),
        change: None,
        source: GEMINI_LITELLM_SOURCE,
    },
    row(GEMINI, "gemini-2.5-flash", Rates::gemini(0.30, 2.50), GEMINI_LITELLM_SOURCE),
    row(GEMINI, "gemini-2.5-flash-lite", Rates::gemini(0.10, 0.40), GEMINI_LITELLM_SOURCE),
    row(GEMINI, "gemini-embedding-2", Rates::gemini(0.20, 0.0), GEMINI_SOURCE),
    // Mistral
    row(MISTRAL, "mistral-medium", Rates::flat(1.50, 7.50), MISTRAL_SOURCE),
    row(MISTRAL, "mistral-large", Rates::flat(0.50, 1.50), MISTRAL_SOURCE),
    row(MISTRAL, "mistral-small", Rates::flat(0.10, 0.30), MISTRAL_SOURCE),
    row(MISTRAL, "codestral", Rates::flat(0.30, 0.90), MISTRAL_SOURCE),
    row(MISTRAL, "devstral", Rates::flat(0.40, 2.00), MISTRAL_SOURCE),
    row(MISTRAL, "devstral-medium", Rates::flat(0.40, 2.00), MISTRAL_SOURCE),
    row(MISTRAL, "magistral-medium", Rates::flat(2.00, 5.00), MISTRAL_SOURCE),
    // Cohere
    row(COHERE, "command-a", Rates::flat(2.50, 10.00), COHERE_SOURCE),
    row(COHERE, "command-r-plus", Rates::flat(2.50, 10.00), COHERE_SOURCE),
    row(COHERE, "command-r", Rates::flat(0.15, 0.60), COHERE_SOURCE),
    row(COHERE, "command-r7b", Rates::flat(0.0375, 0.15), COHERE_SOURCE),
];

#[cfg(test)]
mod tests {
    use routing::table::Price;

    use super::*;

    fn target(model: &str, price: Option<Price>) -> Target {
        Target { name: "t".into(), provider: "p".into(), model: model.into(), weight: 1, context_window: None, price }
    }

    fn built_in(kind: ProviderKind, model: &str) -> Option<&'static str> {
        match Pricing::for_target(kind, &target(model, None))?.source {
            PriceSource::BuiltIn { model, .. } => Some(model),
            PriceSource::Manifest => None,
        }
    }

    fn usage(prompt: u64, cached: u64, cache_write: u64, completion: u64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            cache_write_tokens: cache_write,
            reasoning_tokens: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn models_match_their_row_with_date_suffixes_but_not_a_neighbouring_model() {
        assert_eq!(built_in(ProviderKind::Openai, "gpt-4o-mini-2024-07-18"), Some("gpt-4o-mini"));
        assert_eq!(built_in(ProviderKind::Openai, "gpt-5-mini"), Some("gpt-5-mini"));
        assert_eq!(built_in(ProviderKind::Openai, "gpt-5-2025-08-07"), Some("gpt-5"));
        assert_eq!(built_in(ProviderKind::Openai, "gpt-5.5-pro"), Some("gpt-5.5-pro"));
        assert_eq!(built_in(ProviderKind::Anthropic, "claude-haiku-4-5-20251001"), Some("claude-haiku-4-5"));
        assert_eq!(built_in(ProviderKind::Anthropic, "claude-sonnet-4-5@20250929"), Some("claude-sonnet-4-5"));
        assert_eq!(built_in(ProviderKind::Anthropic, "claude-opus-4-20250514"), Some("claude-opus-4"));
        assert_eq!(built_in(ProviderKind::Anthropic, "claude-opus-4-5-20251101"), Some("claude-opus-4-5"));
        assert_eq!(built_in(ProviderKind::Anthropic, "claude-opus-4-9"), None, "not claude-opus-4's price");
        assert_eq!(built_in(ProviderKind::Gemini, "models/gemini-2.5-flash-lite"), Some("gemini-2.5-flash-lite"));
        assert_eq!(built_in(ProviderKind::Gemini, "gemini-2.5-flash-preview-05-20"), None);
        assert_eq!(built_in(ProviderKind::Mistral, "mistral-small-latest"), Some("mistral-small"));
        assert_eq!(built_in(ProviderKind::Mistral, "devstral-small-2507"), None);
        assert_eq!(built_in(ProviderKind::Cohere, "command-r-08-2024"), Some("command-r"));
        assert_eq!(built_in(ProviderKind::Cohere, "command-r7b-12-2024"), Some("command-r7b"));
        // Prices belong to a provider: the same name elsewhere is not priced.
        assert_eq!(built_in(ProviderKind::OpenaiCompatible, "gpt-4o-mini"), None);
        assert_eq!(built_in(ProviderKind::AzureOpenai, "gpt-4o-mini"), None);
        assert_eq!(built_in(ProviderKind::Anthropic, "gpt-4o-mini"), None);
    }

    #[test]
    fn openai_cost_bills_cached_input_at_the_cached_rate() {
        let pricing = Pricing::for_target(ProviderKind::Openai, &target("gpt-4.1", None)).unwrap();
        // 1000 prompt tokens of which 400 cached, 100 completion tokens:
        // 600 × 2.00 + 400 × 0.50 + 100 × 8.00 = 2200 per million.
        assert!(close(pricing.cost(&usage(1_000, 400, 0, 100)), 0.0022));
    }

    #[test]
    fn anthropic_cost_bills_cache_reads_and_writes_separately() {
        let pricing = Pricing::for_target(ProviderKind::Anthropic, &target("claude-sonnet-4-5", None)).unwrap();
        // prompt 10 000 = 2000 uncached + 7000 read + 1000 written; 500 out:
        // 2000 × 3 + 7000 × 0.30 + 1000 × 3.75 + 500 × 15 = 19 350 per million.
        assert!(close(pricing.cost(&usage(10_000, 7_000, 1_000, 500)), 0.01935));
    }

    #[test]
    fn gemini_long_prompts_and_announced_changes_use_their_rates() {
        let pro = Pricing::for_target(ProviderKind::Gemini, &target("gemini-3.1-pro-preview", None)).unwrap();
        assert!(close(pro.cost(&usage(200_000, 0, 0, 0)), 0.4));
        assert!(close(pro.cost(&usage(200_001, 0, 0, 1_000)), 200_001.0 * 4.0 / 1e6 + 0.018));
        let flash = Pricing::for_target(ProviderKind::Gemini, &target("gemini-3.8-flash", None)).unwrap();
        let new_year = UNIX_EPOCH + Duration::from_secs(1_798_761_600);
        assert_eq!(flash.rates_at(10, new_year - Duration::from_secs(1)).input, 0.75);
        assert_eq!(flash.rates_at(10, new_year).input, 1.50);
    }

    #[test]
    fn a_manifest_price_wins_and_without_cache_rates_bills_cache_at_the_input_price() {
        let price = |cached: Option<&str>| Price {
            input_per_million: "1.5".into(),
            output_per_million: "2".into(),
            cached_input_per_million: cached.map(Into::into),
            cache_write_per_million: None,
        };
        let plain = Pricing::for_target(ProviderKind::Openai, &target("gpt-4.1", Some(price(None)))).unwrap();
        assert_eq!(plain.source, PriceSource::Manifest);
        assert!(close(plain.cost(&usage(1_000, 400, 0, 100)), (1_000.0 * 1.5 + 100.0 * 2.0) / 1e6));
        let cached = Pricing::for_target(ProviderKind::Openai, &target("gpt-4.1", Some(price(Some("0.1"))))).unwrap();
        assert!(close(cached.cost(&usage(1_000, 400, 0, 100)), (600.0 * 1.5 + 400.0 * 0.1 + 100.0 * 2.0) / 1e6));
        // Any provider, any model: a local server with a notional price.
        let local = Pricing::for_target(ProviderKind::OpenaiCompatible, &target("llama3", Some(price(None))));
        assert!(local.is_some());
        assert!(Pricing::for_target(ProviderKind::OpenaiCompatible, &target("llama3", None)).is_none());
    }

    #[test]
    fn dollars_are_printed_as_plain_decimals() {
        assert_eq!(format_usd(0.0022), "0.0022");
        assert_eq!(format_usd(0.000_000_02), "0.00000002");
        assert_eq!(format_usd(0.0), "0.0");
        assert_eq!(format_usd(12.5), "12.5");
    }

    #[test]
    fn every_row_is_reachable_by_its_own_id() {
        for row in TABLE {
            let kind = row.kinds[0];
            assert_eq!(built_in(kind, row.model), Some(row.model), "{}", row.model);
        }
    }
}
