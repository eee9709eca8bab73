#!/usr/bin/env bash
# Builds switchyard-test-apiserver (the real kube-apiserver + embedded etcd, see
# main.go and docs/kube-apiserver.md) into the cache and prints its path as the
# last line of output.
#
#   SWITCHYARD_CACHE  cache root (default: $HOME/.cache/switchyard)
#
# The binary is rebuilt only when go.mod, go.sum, main.go, this script or the
# Go version change (their hash is stored next to it). Modules come from the Go
# module proxy into the ordinary module cache; compiled packages go to the
# ordinary Go build cache, so a rebuild after a small change is fast.
# Concurrent callers (parallel tests) are serialised with a lock file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
bin_dir="$cache/bin"
name=switchyard-test-apiserver
out="$bin_dir/$name"

command -v go >/dev/null || { echo "build.sh: go is not installed (need Go >= 1.24)" >&2; exit 1; }
mkdir -p "$bin_dir"

key="$( { cat "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh"; go version; } | sha256sum | cut -d' ' -f1)"

exec 9>"$bin_dir/.$name.lock"
flock 9

if [[ -x "$out" && -f "$out.key" && "$(cat "$out.key")" == "$key" ]]; then
    echo "$out"
    exit 0
fi

cd "$here"
version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"   # e.g. v1.33.13
major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
# What kube-apiserver reports on /version (and what kubectl checks for skew),
# as the Kubernetes release build sets it.
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"

echo "build.sh: building $name (k8s.io/kubernetes $version, $(go version | cut -d' ' -f3)); the first build takes several minutes" >&2
start=$(date +%s)
tmp="$out.tmp.$$"
if ! go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp" . ; then
    rm -f "$tmp"
    echo "build.sh: go build of $name FAILED (see the Go errors above)" >&2
    exit 1
fi
mv -f "$tmp" "$out"
echo "$key" > "$out.key"
echo "build.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
