//! `ProviderSecret`: how to reach one provider account (design §2).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BASE_URL_PATTERN, DNS_SUBDOMAIN_PATTERN, DURATION_PATTERN, FRACTION_PATTERN};
use crate::table::ProviderKind;

/// How to reach one provider account: the wire protocol, the base URL, the
/// Secret key holding the API key, static headers and client-side limits.
#[expect(clippy::duplicated_attributes, reason = "kube's `printcolumn(...)` repeats `type_` once per column")]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "ProviderSecret",
    plural = "providersecrets",
    shortname = "ps",
    category = "switchyard",
    namespaced,
    status = "ProviderSecretStatus",
    derive = "PartialEq",
    doc = "How to reach one provider account: protocol, base URL, API key reference, headers and limits.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Base URL", type_ = "string", json_path = ".spec.baseUrl", priority = 1),
    printcolumn(
        name = "Resolved",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ResolvedRefs\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.baseUrl) || self.provider != 'azure-openai'"
).message("baseUrl is required for provider azure-openai").field_path(".baseUrl"))]
#[x_kube(validation = Rule::new(
    "has(self.baseUrl) || has(self.preset) || self.provider != 'openai-compatible'"
).message("baseUrl is required for provider openai-compatible without a preset").field_path(".baseUrl"))]
#[x_kube(validation = Rule::new(
    "has(self.apiKey) || self.provider in ['openai-compatible', 'mock']"
).message("apiKey is required for this provider (optional only for openai-compatible and mock)").field_path(".apiKey"))]
#[x_kube(validation = Rule::new(
    "has(self.apiKey) || !has(self.preset) || !(self.preset in ['groq', 'together'])"
).message("apiKey is required for the hosted presets groq and together").field_path(".apiKey"))]
#[x_kube(validation = Rule::new("!has(self.preset) || self.provider == 'openai-compatible'")
    .message("preset is only allowed with provider openai-compatible").field_path(".preset"))]
#[x_kube(validation = Rule::new("!has(self.mock) || self.provider == 'mock'")
    .message("mock settings are only allowed with provider mock").field_path(".mock"))]
#[x_kube(validation = Rule::new("!has(self.azure) || self.provider == 'azure-openai'")
    .message("azure settings are only allowed with provider azure-openai").field_path(".azure"))]
pub struct ProviderSecretSpec {
    /// Wire protocol and vendor: `openai`, `azure-openai`, `anthropic`,
    /// `gemini`, `cohere`, `mistral`, `openai-compatible` (vLLM, Ollama, Groq,
    /// Together, ...) or the built-in `mock`.
    pub provider: ProviderType,

    /// Base URL as the provider's SDK means it: with the version path for
    /// OpenAI-style providers (`http://vllm:8000/v1`), the bare origin for
    /// Anthropic, Gemini and Cohere, the resource origin for Azure. Required
    /// for `azure-openai` and for `openai-compatible` without a `preset`;
    /// defaults to the vendor's public endpoint (or the preset's) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = BASE_URL_PATTERN))]
    pub base_url: Option<String>,

    /// Where the API key is. Required except for `openai-compatible` and `mock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKey>,

    /// Extra static, non-secret request headers, e.g. `OpenAI-Organization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self.all(k, k.matches(\"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$\"))"
    ).message("header names must be HTTP tokens (letters, digits and !#$%&'*+-.^_`|~)"))]
    #[schemars(extend("maxProperties" = 64))]
    pub headers: Option<BTreeMap<String, String>>,

    /// Options for `azure-openai` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureOptions>,

    /// For `openai-compatible` only: a known server whose usual base URL
    /// becomes the default of `baseUrl` (`vllm` `http://localhost:8000/v1`,
    /// `ollama` `http://localhost:11434/v1`, `groq`
    /// `https://api.groq.com/openai/v1`, `together`
    /// `https://api.together.xyz/v1`). Nothing else changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,

    /// Client-side limits the proxies enforce for this account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,

    /// Behaviour of the built-in `mock` provider; only for `provider: mock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockOptions>,
}

/// The wire protocol and vendor of a provider account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderType {
    /// OpenAI.
    Openai,
    /// Azure OpenAI.
    AzureOpenai,
    /// Anthropic.
    Anthropic,
    /// Google Gemini.
    Gemini,
    /// Cohere.
    Cohere,
    /// Mistral.
    Mistral,
    /// Any server speaking OpenAI's API: vLLM, Ollama, Groq, Together, ...
    OpenaiCompatible,
    /// The built-in fake provider.
    Mock,
}

impl ProviderType {
    /// The table's spelling of the same provider.
    pub fn kind(self) -> ProviderKind {
        match self {
            Self::Openai => ProviderKind::Openai,
            Self::AzureOpenai => ProviderKind::AzureOpenai,
            Self::Anthropic => ProviderKind::Anthropic,
            Self::Gemini => ProviderKind::Gemini,
            Self::Cohere => ProviderKind::Cohere,
            Self::Mistral => ProviderKind::Mistral,
            Self::OpenaiCompatible => ProviderKind::OpenaiCompatible,
            Self::Mock => ProviderKind::Mock,
        }
    }

    /// The spelling used in manifests.
    pub fn as_str(self) -> &'static str {
        self.kind().as_str()
    }
}

/// A known OpenAI-compatible server (`spec.preset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// Ollama's OpenAI-compatible endpoints.
    Ollama,
    /// Groq's hosted API.
    Groq,
    /// Together AI's hosted API.
    Together,
}

impl Preset {
    /// The spelling used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vllm => "vllm",
            Self::Ollama => "ollama",
            Self::Groq => "groq",
            Self::Together => "together",
        }
    }

    /// The server's usual base URL, with its version path.
    pub fn base_url(self) -> &'static str {
        match self {
            Self::Vllm => "http://localhost:8000/v1",
            Self::Ollama => "http://localhost:11434/v1",
            Self::Groq => "https://api.groq.com/openai/v1",
            Self::Together => "https://api.together.xyz/v1",
        }
    }

    /// Whether the server is a hosted service that always wants an API key.
    pub fn needs_api_key(self) -> bool {
        matches!(self, Self::Groq | Self::Together)
    }
}

/// Where the API key is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// A key of a core/v1 Secret in the same namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Options for `azure-openai`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureOptions {
    /// The `api-version` query parameter, e.g. `2024-10-21`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$"))]
    pub api_version: Option<String>,
}

/// Client-side limits for one provider account; each at least 1 when set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u32>,
    /// Prompt plus completion tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once, per proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<u32>,
}

/// Behaviour of the built-in `mock` provider; every field is optional.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MockOptions {
    /// Delay before the first token (or the whole response), e.g. `50ms`. Defaults to `0ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub latency: Option<String>,
    /// Streaming speed; 0 (the default) sends everything at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub tokens_per_second: Option<u32>,
    /// Probability of an injected failure, a fraction such as `"0.05"`. Defaults to `"0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8), regex(pattern = FRACTION_PATTERN))]
    pub failure_rate: Option<String>,
    /// HTTP status of an injected failure, 400 to 599. Defaults to 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 400, max = 599))]
    pub failure_status: Option<u16>,
}

/// Observed state, written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSecretStatus {
    /// `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `ResolvedRefs`, with Gateway API meanings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
