#!/usr/bin/env bash
# Smoke test of the CRDs against the real kube-apiserver (docs/kube-apiserver.md):
# builds the server and kubectl (cached), starts the server, installs crds/,
# applies valid objects (testdata/valid.yaml) and checks that every manifest in
# testdata/invalid/ is rejected at apply time with the messages its
# `# expect:` lines name (and without those its `# not-expect:` lines name),
# prints the server's messages, checks the printer
# columns, the status subresource and RBAC for a second user, and stops the
# server. Exits 0 only if every check behaved as expected.
#
#   KUBECTL           use this kubectl instead of building one (kubectl.sh)
#   SWITCHYARD_CACHE  cache root for the binaries (default: $HOME/.cache/switchyard)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
crds="$repo/crds"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "  PASS: $*"; }
fail() { failed=$((failed + 1)); echo "  FAIL: $*"; }
step() { echo; echo "== $*"; }
indent() { sed 's/^/    | /'; }

t0=$(date +%s.%N)
since() { awk -v start="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.1fs", now - start }'; }

step "build"
server_bin="$("$here/build.sh" | tail -n 1)" || { echo "build.sh failed"; exit 1; }
if [[ -n "${KUBECTL:-}" ]]; then
    kubectl_bin="$KUBECTL"
else
    kubectl_bin="$("$here/kubectl.sh" | tail -n 1)" || { echo "kubectl.sh failed"; exit 1; }
fi
echo "  server:  $server_bin"
echo "  kubectl: $kubectl_bin ($("$kubectl_bin" version --client 2>/dev/null | head -n 1))"

work="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-smoke-XXXXXX")"
mkdir -p "$work/tmp"
kubeconfig="$work/kubeconfig"
log="$work/apiserver.log"
server_pid=""

stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid"
        local rc=$?
        server_pid=""
        return $rc
    fi
    server_pid=""
    return 0
}
cleanup() {
    stop_server >/dev/null 2>&1
    if (( failed > 0 )) && [[ -f "$log" ]]; then
        echo; echo "== last lines of the server log ($log)"; tail -n 30 "$log" | indent
        echo "(kept $work)"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

k() { "$kubectl_bin" --kubeconfig "$kubeconfig" --cache-dir "$work/kube-cache" "$@"; }

step "start the server"
t=$(date +%s.%N)
# TMPDIR for the server: its temporary directory must be gone after it stops.
TMPDIR="$work/tmp" "$server_bin" --kubeconfig "$kubeconfig" --log-file "$log" \
    --user switchyard-operator:switchyard-testers >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
ready=""
for _ in $(seq 1 600); do
    if read -r ready_line <"$work/stdout" 2>/dev/null && [[ "$ready_line" == ready* ]]; then
        ready="$ready_line"
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.2
done
if [[ -z "$ready" ]]; then
    fail "server did not print 'ready' (stderr below)"
    cat "$work/stderr" | indent
    exit 1
fi
echo "  $ready  (after $(since "$t"))"
read -r _ url kc_path <<<"$ready"
[[ "$url" == https://127.0.0.1:* && "$kc_path" == "$kubeconfig" ]] && pass "ready line names the URL and the kubeconfig" \
    || fail "unexpected ready line: $ready"
k version 2>&1 | indent

step "install the CRDs: kubectl apply -f crds/"
if out="$(k apply -f "$crds/" 2>&1)"; then
    echo "$out" | indent
    pass "CRDs accepted by the server"
else
    echo "$out" | indent
    fail "the server rejected our CRDs"
    exit 1
fi
if out="$(k wait --for=condition=Established --timeout=60s crd/modelroutes.switchyard.dev crd/providersecrets.switchyard.dev 2>&1)"; then
    echo "$out" | indent
    pass "both CRDs Established"
else
    echo "$out" | indent
    fail "CRDs not Established"
    k get crd -o yaml 2>&1 | grep -A 20 'conditions:' | indent
    exit 1
fi

step "apply valid objects (testdata/valid.yaml)"
ok=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
    # Right after Established the discovery of the new group can lag a moment.
    if out="$(k apply -f "$here/testdata/valid.yaml" 2>&1)"; then ok=1; break; fi
    grep -q 'no matches for kind\|ensure CRDs are installed' <<<"$out" || break
    sleep 0.5
done
echo "$out" | indent
[[ -n "$ok" ]] && pass "valid objects accepted" || fail "valid objects rejected"

step "invalid objects must be rejected at apply time (testdata/invalid/)"
for f in "$here"/testdata/invalid/*.yaml; do
    name="$(basename "$f" .yaml)"
    echo "-- $name"
    if out="$(k apply -f "$f" 2>&1)"; then
        echo "$out" | indent
        fail "$name was ACCEPTED"
        continue
    fi
    echo "$out" | indent
    missing=""
    while IFS= read -r want; do
        grep -qF -- "$want" <<<"$out" || missing+=" [$want]"
    done < <(sed -n 's/^# expect: //p' "$f")
    while IFS= read -r unwanted; do
        grep -qF -- "$unwanted" <<<"$out" && missing+=" [no: $unwanted]"
    done < <(sed -n 's/^# not-expect: //p' "$f")
    if [[ -z "$missing" ]]; then
        pass "$name rejected as expected"
    else
        fail "$name rejected, but the message lacks:$missing"
    fi
done

step "printer columns"
out="$(k get modelroutes 2>&1)"; echo "$out" | indent
head -n 1 <<<"$out" | grep -Eq '^NAME +ALIAS +STRATEGY +CANARY +PROGRAMMED +AGE$' \
    && pass "kubectl get modelroutes shows NAME ALIAS STRATEGY CANARY PROGRAMMED AGE" \
    || fail "unexpected modelroute columns"
out="$(k get providersecrets -o wide 2>&1)"; echo "$out" | indent
head -n 1 <<<"$out" | grep -Eq '^NAME +PROVIDER +BASE URL +RESOLVED +AGE$' \
    && pass "kubectl get providersecrets -o wide shows NAME PROVIDER BASE URL RESOLVED AGE" \
    || fail "unexpected providersecret columns"
out="$(k get switchyard 2>&1)"; echo "$out" | indent
grep -q 'modelroute.switchyard.dev/chat' <<<"$out" && grep -q 'providersecret.switchyard.dev/vllm' <<<"$out" \
    && pass "category 'switchyard' lists both kinds" || fail "category 'switchyard' incomplete"

step "status subresource"
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
status='{"status":{"observedGeneration":1,"canary":{"percent":"5","phase":"Manual"},"conditions":[{"type":"Programmed","status":"True","reason":"Programmed","message":"ok","lastTransitionTime":"'"$now"'","observedGeneration":1}]}}'
if out="$(k patch modelroute chat --subresource=status --type=merge -p "$status" 2>&1)"; then
    echo "$out" | indent
    out="$(k get modelroute chat 2>&1)"; echo "$out" | indent
    tail -n 1 <<<"$out" | grep -Eq '^chat +chat +weighted +5 +True ' \
        && pass "status written through /status and shown in the columns" || fail "status not shown as expected"
else
    echo "$out" | indent
    fail "status patch rejected"
fi
out="$(k patch modelroute chat --type=merge -p '{"status":{"canary":{"percent":"99"}}}' 2>&1)"
echo "$out" | indent
[[ "$(k get modelroute chat -o jsonpath='{.status.canary.percent}' 2>&1)" == 5 ]] \
    && pass "status ignored on the main resource" || fail "status changed through the main resource"

step "RBAC: a second user (--user switchyard-operator)"
op() { k --context switchyard-operator "$@"; }
if out="$(op get modelroutes 2>&1)"; then
    echo "$out" | indent; fail "switchyard-operator could list modelroutes without a role"
else
    echo "$out" | indent
    grep -q 'Forbidden\|forbidden' <<<"$out" && pass "switchyard-operator forbidden without a role" || fail "unexpected error"
fi
k create role modelroute-reader --verb=get,list,watch --resource=modelroutes.switchyard.dev 2>&1 | indent
k create rolebinding modelroute-reader --role=modelroute-reader --user=switchyard-operator 2>&1 | indent
if out="$(op get modelroutes -o name 2>&1)"; then
    echo "$out" | indent; pass "switchyard-operator can list modelroutes with the role"
else
    echo "$out" | indent; fail "switchyard-operator still forbidden"
fi
out="$(op delete modelroute chat 2>&1)" && fail "switchyard-operator could delete" \
    || { echo "$out" | indent; pass "switchyard-operator cannot delete"; }

step "stop the server (SIGTERM)"
t=$(date +%s.%N)
stop_server; rc=$?
[[ $rc -eq 0 ]] && pass "server exited 0 after SIGTERM in $(since "$t")" || fail "server exited $rc"
if [[ -z "$(ls -A "$work/tmp")" ]]; then pass "server removed its temporary directory"
else fail "left behind: $(ls -A "$work/tmp")"; fi

echo
echo "smoke.sh total $(since "$t0")"
echo "$passed passed, $failed failed"
(( failed == 0 ))
