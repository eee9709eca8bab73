//! Switchyard's control plane.
//!
//! Watches `ModelRoute`s, `ProviderSecret`s and the Secrets they reference,
//! compiles them with the same [`routing::compile`] the standalone proxy
//! uses, serves the snapshot to every proxy (long poll, design §4), and
//! writes in status exactly what is live. One replica works at a time,
//! elected through a Lease. The operator never depends on the proxy crate:
//! [`routing::Snapshot`] and [`routing::distribution`] are the whole contract.

pub mod app;
pub mod args;
pub mod fleet;
pub mod inputs;
pub mod leader;
pub mod metrics;
pub mod server;
pub mod status;
