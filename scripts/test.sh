#!/usr/bin/env bash
# The whole test suite, from a fresh clone: Rust lints and tests, the CRDs
# against a real kube-apiserver, then the OpenAI and Anthropic SDK conformance tests
# against the real proxy binary. Installs what it needs: crates via cargo, Go
# modules via the Go module proxy (the API server harness), Python packages
# into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "rustfmt"
cargo fmt --all --check

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "the proxy must not depend on a Kubernetes client"
if cargo tree -p proxy -e normal --locked | grep -E 'kube-(client|runtime)'; then
  echo "proxy depends on a Kubernetes client crate" >&2
  exit 1
fi

step "the operator must not depend on the proxy"
if cargo tree -p operator -e normal --locked | grep -E '^\S* ?proxy v|[ ─]proxy v'; then
  echo "operator depends on the proxy crate: share types through routing instead" >&2
  exit 1
fi

step "build the binaries the end-to-end tests start (switchyard-operator, switchyard-proxy)"
cargo build --workspace --bins --locked

step "cargo test (everything but the end-to-end tests)"
cargo test --workspace --all-features --locked --exclude e2e

step "end-to-end: the operator and proxies against a real kube-apiserver (tests/e2e)"
# A failing test prints the tail of every log it captured (operator, proxies)
# and keeps its files under target/tmp/e2e/<test binary>/<namespace>/.
if ! cargo test -p e2e --all-features --locked; then
  echo >&2
  echo "end-to-end tests FAILED: see the captured logs above; files in $PWD/target/tmp/e2e/" >&2
  exit 1
fi

step "the generated CRDs against a real kube-apiserver (built once from Go modules, cached)"
bash tests/kube-apiserver/smoke.sh

step "build binaries for the conformance tests"
cargo build --workspace --all-features --all-targets --locked

step "python environment for SDK conformance"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt

step "SDK conformance (official openai and anthropic packages against the proxy binary and every provider's fake)"
SWITCHYARD_PROXY_BIN="$PWD/target/debug/switchyard-proxy" \
FAKE_UPSTREAM_BIN="$PWD/target/debug/fake-upstream" \
  .venv/bin/python -m pytest -q tests/conformance
