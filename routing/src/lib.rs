//! Switchyard's shared core: what a route *is*, independent of how it is run.
//!
//! This crate owns the CRD types ([`api`]), reading the same YAML users
//! `kubectl apply` ([`manifest`]), the pure and deterministic compile step
//! ([`compile`]) and the compiled table ([`table`]), which is the only wire
//! format between the operator and the proxies. It deliberately has no async
//! runtime, HTTP stack or Kubernetes client: compile is a plain function.
//!
//! ```text
//! [ ModelRoute ] --targets[*].provider--> [ ProviderSecret ] --apiKey.secretKeyRef--> [ Secret ]
//!       |   \--fallbacks[*]--> [ ModelRoute (by alias) ]        |
//!       +------------------- compile() -------------------------+--> Snapshot { table, credentials, hash }
//! ```

pub mod api;
pub mod compile;
pub mod diag;
pub mod distribution;
pub mod manifest;
pub mod secret;
pub mod table;

pub use compile::{Compiled, Inputs, compile};
pub use diag::Diagnostic;
pub use secret::Redacted;
pub use table::{RoutingTable, Snapshot};
