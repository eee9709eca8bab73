//! The user-facing API: the `ModelRoute` and `ProviderSecret` custom resources
//! (design §2), group [`GROUP`], version [`VERSION`], both namespaced.
//!
//! These types are exactly what users `kubectl apply` and what standalone mode
//! reads from files. Validation that the API server can enforce lives in the
//! generated schema (types, enums, ranges, patterns and CEL rules); the compile
//! step ([`crate::compile`]) repeats every one of those checks because
//! standalone mode has no API server.
//!
//! The committed CRD YAML under `crds/` is generated from these types by
//! `cargo run -p routing --bin crdgen`; `routing/tests/crds_current.rs` fails
//! when it drifts.

use kube::CustomResourceExt;

pub mod model_route;
pub mod provider_secret;

pub use model_route::*;
pub use provider_secret::*;

/// API group of every Switchyard resource.
pub const GROUP: &str = "switchyard.dev";
/// API version of the resources in this module.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests: `switchyard.dev/v1alpha1`.
pub const API_VERSION: &str = "switchyard.dev/v1alpha1";

// Schema patterns, shared by the schema attributes and the compile step's
// messages. The compile step re-implements them by hand (no regex engine in
// this crate); `compile::parse` has the unit tests that keep both in line.

/// A duration: one or more `<digits><unit>` with unit `ms`, `s`, `m` or `h`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";
/// A percentage from 0 to 100 with at most two decimals.
pub const PERCENT_PATTERN: &str = r"^(100(\.0{1,2})?|[0-9]{1,2}(\.[0-9]{1,2})?)$";
/// A fraction from 0 to 1 with at most six decimals (error and failure rates).
pub const FRACTION_PATTERN: &str = r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$";
/// A non-negative decimal (prices in USD).
pub const DECIMAL_PATTERN: &str = r"^[0-9]{1,9}(\.[0-9]{1,9})?$";
/// An RFC 1123 DNS label (target names).
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// An RFC 1123 DNS subdomain (Kubernetes object names).
pub const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Printable ASCII without spaces (model aliases and upstream model ids).
pub const MODEL_ID_PATTERN: &str = r"^[!-~]+$";
/// An HTTP header name (an RFC 9110 token).
pub const HEADER_NAME_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// A base URL.
pub const BASE_URL_PATTERN: &str = r"^https?://[^\s/?#]+[^\s?#]*$";

/// One generated CRD manifest, ready to be written to `crds/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdFile {
    /// File name under the repository's `crds/` directory, e.g. `modelroute.yaml`.
    pub file_name: &'static str,
    /// The YAML text, with a header saying it is generated.
    pub yaml: String,
}

/// Renders every CRD of this API as YAML, in a fixed order.
///
/// Used by the `crdgen` binary and by the drift test; both compare or write
/// exactly these bytes.
pub fn crd_files() -> Result<Vec<CrdFile>, serde_yaml_ng::Error> {
    const HEADER: &str = "# Generated from the Rust types in routing/src/api by \
                          `cargo run -p routing --bin crdgen`. Do not edit.\n";
    Ok(vec![
        CrdFile {
            file_name: "modelroute.yaml",
            yaml: format!("{HEADER}{}", serde_yaml_ng::to_string(&ModelRoute::crd())?),
        },
        CrdFile {
            file_name: "providersecret.yaml",
            yaml: format!("{HEADER}{}", serde_yaml_ng::to_string(&ProviderSecret::crd())?),
        },
    ])
}

#[cfg(test)]
mod tests;
