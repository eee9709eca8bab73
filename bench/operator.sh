#!/usr/bin/env bash
# Operator benchmark (issue 4, item 7): the real kube-apiserver
# (tests/kube-apiserver), one switchyard-operator and three switchyard-proxy
# processes in cluster mode, a fake OpenAI upstream. Measures
#   - time from `kubectl apply` of a route edit until all 3 proxies serve it
#     (their data ports answer from the new upstream model), p50/p99 over
#     BENCH_EDITS edits; target p99 < 1 s;
#   - with BENCH_ROUTES routes: time until all 3 proxies run them, and p50/p99
#     of one edit among them (compile of the whole table + distribution), plus
#     the operator's compile time from its metrics.
#
#   bash bench/operator.sh
#
#   BENCH_EDITS=50 BENCH_ROUTES=1000 BENCH_BIG_EDITS=20
#   SWITCHYARD_OPERATOR_BIN / SWITCHYARD_PROXY_BIN  use these binaries instead of release builds
#
# Run it on a quiet machine: the figures are wall-clock times. Writes the
# summary to stdout and to bench/out/operator-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${SWITCHYARD_OPERATOR_BIN:-}" || -z "${SWITCHYARD_PROXY_BIN:-}" ]]; then
  cargo build --release --locked -p operator -p proxy --bins
  export SWITCHYARD_OPERATOR_BIN="${SWITCHYARD_OPERATOR_BIN:-$PWD/target/release/switchyard-operator}"
  export SWITCHYARD_PROXY_BIN="${SWITCHYARD_PROXY_BIN:-$PWD/target/release/switchyard-proxy}"
fi
mkdir -p bench/out
cargo run --locked -p e2e --example operator_bench -- \
  --edits "${BENCH_EDITS:-50}" --routes "${BENCH_ROUTES:-1000}" --big-edits "${BENCH_BIG_EDITS:-20}" \
  --out bench/out/operator-latest.md
