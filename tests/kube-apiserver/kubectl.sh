#!/usr/bin/env bash
# Builds kubectl at exactly the test server's version (k8s.io/kubernetes from
# go.mod, cmd/kubectl; declared as a `tool` in go.mod) into the same cache as
# build.sh and prints its path as the last line of output.
#
#   SWITCHYARD_CACHE  cache root (default: $HOME/.cache/switchyard)
#
# Rebuilt only when go.mod, go.sum, this script or the Go version change. It
# shares the module cache and most compiled packages (client-go, apimachinery)
# with switchyard-test-apiserver, so after build.sh it costs little.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
bin_dir="$cache/bin"
out="$bin_dir/kubectl"

command -v go >/dev/null || { echo "kubectl.sh: go is not installed (need Go >= 1.24)" >&2; exit 1; }
mkdir -p "$bin_dir"

key="$( { cat "$here/go.mod" "$here/go.sum" "$here/kubectl.sh"; go version; } | sha256sum | cut -d' ' -f1)"

exec 9>"$bin_dir/.kubectl.lock"
flock 9

if [[ -x "$out" && -f "$out.key" && "$(cat "$out.key")" == "$key" ]]; then
    echo "$out"
    exit 0
fi

cd "$here"
version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"

echo "kubectl.sh: building kubectl $version" >&2
start=$(date +%s)
tmp="$out.tmp.$$"
if ! go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kubectl; then
    rm -f "$tmp"
    echo "kubectl.sh: go build of kubectl FAILED (see the Go errors above)" >&2
    exit 1
fi
mv -f "$tmp" "$out"
echo "$key" > "$out.key"
echo "kubectl.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
