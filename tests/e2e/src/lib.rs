//! End-to-end tests of Switchyard: the `switchyard-operator` and
//! `switchyard-proxy` binaries as separate processes, against the real
//! kube-apiserver of `tests/kube-apiserver` (see `docs/kube-apiserver.md`).
//!
//! The code is in `tests/` (the harness is `tests/support/mod.rs`) and in
//! `examples/operator_bench.rs`; this library is empty.
