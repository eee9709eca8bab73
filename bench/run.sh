#!/usr/bin/env bash
# Switchyard proxy benchmark: throughput, latency and memory of
# switchyard-proxy versus direct-to-upstream and versus an nginx reverse proxy.
#
#   bash bench/run.sh
#
# Layout (2 cores needed):
#   core 1: the upstream (nginx returning a fixed chat.completion JSON) + wrk
#   core 0: the systems under test (nginx as reverse proxy, Switchyard at
#           RUST_LOG=warn and at info), all started up front and loaded one
#           at a time (nothing for "direct")
# then, for latency once more, the systems under test moved to core 1 too.
#
# Environment knobs (all optional):
#   BENCH_ROUNDS=5          rounds; each runs every path at each connection
#                           count; the report gives medians over the rounds
#   BENCH_DURATION=4        seconds of each measured wrk run
#   BENCH_WARMUP=2          seconds of the unmeasured wrk run per path, once
#   BENCH_CONNS_LATENCY=8   connections of the latency run
#   BENCH_CONNS_THROUGHPUT=64  connections of the throughput run
#   BENCH_DURATION_SINGLE=2 seconds of the 1-connection run (per-hop latency
#                           without queueing)
#   SWITCHYARD_PROXY_BIN=path  use this binary instead of building one
#   BENCH_NICE=-20          nice level of everything the benchmark starts
#                           (as root; shields it from unrelated work such as
#                           a cargo build; 0 to disable)
#   BENCH_KEEP=1            keep the temporary directory (configs, logs)
#   BENCH_CALLGRIND=1       instead of all that: count switchyard-proxy's
#                           user-space instructions per request under
#                           valgrind's callgrind (RUST_LOG=warn, BENCH_CONNS_LATENCY
#                           connections, BENCH_CALLGRIND_SECONDS=10 after a
#                           2 s warm-up); repeats to about 0.5 %, unlike time
#                           on a shared VM
#
# Writes the summary to stdout and to bench/out/latest.md. Exits non-zero
# only on errors (a tool missing, a server not starting, wrk reporting
# errors); a missed performance target is reported as FAIL, exit 0.

set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
OUT="$BENCH/out"
ROUNDS="${BENCH_ROUNDS:-5}"
DURATION="${BENCH_DURATION:-4}"
WARMUP="${BENCH_WARMUP:-2}"
CONNS_LAT="${BENCH_CONNS_LATENCY:-8}"
CONNS_TPUT="${BENCH_CONNS_THROUGHPUT:-64}"
DURATION_SINGLE="${BENCH_DURATION_SINGLE:-2}"
SUT_CORE=0
LOAD_CORE=1
if [[ $EUID -eq 0 ]]; then NICE="${BENCH_NICE:--20}"; else NICE="${BENCH_NICE:-0}"; fi

# Targets from the issue.
TARGET_RATIO=0.8        # switchyard req/s >= 0.8 x nginx req/s (at CONNS_TPUT)
TARGET_P99_ADDED_MS=0.5 # switchyard p99 - direct p99 at CONNS_LAT connections
TARGET_PEAK_MIB=50      # VmHWM of switchyard-proxy after all load

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  printf '\n[bench] ERROR: %s\n' "$*" >&2
  exit 1
}
on_err() { printf '[bench] ERROR: command failed (exit %s) at line %s: %s\n' "$1" "$2" "$3" >&2; }
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

# ---------------------------------------------------------------- cleanup
PIDS=()
WORK=""
cleanup() {
  local status=$?
  set +e
  trap - ERR
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if [[ "${BENCH_KEEP:-0}" == 1 || $status -ne 0 ]]; then
      log "temporary files (configs, logs) kept in $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- prerequisites
[[ "$(nproc --all)" -ge 2 ]] || die "needs at least 2 CPUs (core $SUT_CORE for the proxy, core $LOAD_CORE for load + upstream)"
taskset -c "$SUT_CORE,$LOAD_CORE" true 2>/dev/null \
  || die "cannot pin to cores $SUT_CORE and $LOAD_CORE (is this process restricted by a cpuset?)"

install_missing() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
  command -v python3 >/dev/null || missing+=(python3)
  if [[ "${BENCH_CALLGRIND:-0}" == 1 ]]; then command -v valgrind >/dev/null || missing+=(valgrind); fi
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]} with apt-get"
  local sudo=()
  [[ $EUID -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; then
    if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
      log "nginx-light not installable, trying nginx"
      missing=("${missing[@]/nginx-light/nginx}")
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
    else
      die "apt-get install ${missing[*]} failed"
    fi
  fi
}
install_missing
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x "$NGINX" ]] || die "nginx not found after install"
command -v wrk >/dev/null || die "wrk not found after install"

if [[ -n "${SWITCHYARD_PROXY_BIN:-}" ]]; then
  PROXY_BIN="$SWITCHYARD_PROXY_BIN"
else
  log "building switchyard-proxy (release)"
  (cd "$ROOT" && cargo build --release -p proxy --bin switchyard-proxy) \
    || die "cargo build --release -p proxy --bin switchyard-proxy failed"
  PROXY_BIN="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/switchyard-proxy"
fi
[[ -x "$PROXY_BIN" ]] || die "no executable at $PROXY_BIN"

mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/switchyard-bench.XXXXXX)"
chmod 755 "$WORK"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until URL answers 2xx (GET) while PID lives.
wait_http() {
  local url="$1" pid="$2" what="$3" logfile="$4"
  for _ in $(seq 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2 || true
      die "$what exited during startup (log above: $logfile)"
    fi
    curl -sf -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.1
  done
  tail -n 30 "$logfile" >&2 || true
  die "$what not ready at $url after 30 s"
}

# cpu_ticks PID...: utime+stime (clock ticks, all threads) summed over the PIDs.
cpu_ticks() {
  local total=0 pid t
  for pid in "$@"; do
    t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') || t=0
    total=$((total + t))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# Command prefixes: run on one core only, at the benchmark's nice level.
# (Arrays, not functions: `function &` would fork a subshell and $! would not
# be the server's pid.)
ON_SUT_CORE=(nice -n "$NICE" taskset -c "$SUT_CORE")
ON_LOAD_CORE=(nice -n "$NICE" taskset -c "$LOAD_CORE")

# ---------------------------------------------------------------- nginx configs
# A realistic non-streaming OpenAI answer (696 bytes). No `$` (nginx
# variables) and no `'` (the nginx string quote) in it.
RESPONSE_BODY='{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today? If you have any questions or need help with something, feel free to ask.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":25,"total_tokens":34,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_06737a9306"}'
REQUEST_BODY='{"model":"bench","messages":[{"role":"user","content":"hello"}]}'

# nginx_common DIR: main-context lines shared by both nginx instances.
nginx_common() {
  local dir="$1"
  mkdir -p "$dir/tmp"
  chmod 777 "$dir/tmp"
  [[ $EUID -eq 0 ]] && echo "user root;"
  cat <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() {
  local dir="$1"
  cat <<EOF
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
EOF
}

# start_nginx NAME sut|load: runs $WORK/NAME/nginx.conf in the foreground
# (master + 1 worker) pinned to that core; sets NGINX_PID.
start_nginx() {
  local dir="$WORK/$1" pin
  if [[ $2 == sut ]]; then pin=("${ON_SUT_CORE[@]}"); else pin=("${ON_LOAD_CORE[@]}"); fi
  "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
    || die "nginx config $dir/nginx.conf is invalid"
  "${pin[@]}" "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
    >"$dir/stdout.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
}

UPSTREAM_PORT=$(free_port)
mkdir -p "$WORK/upstream"
{
  nginx_common "$WORK/upstream"
  echo "http {"
  nginx_http_common "$WORK/upstream"
  cat <<EOF
  server {
    listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
    location = /healthz { return 200 'ok'; }
    location = /v1/chat/completions {
      default_type application/json;
      return 200 '$RESPONSE_BODY';
    }
    location / { return 404; }
  }
}
EOF
} >"$WORK/upstream/nginx.conf"

# One JSON access line per request, for the nginx that logs like Switchyard
# at `info` does (about 400 bytes).
NGINX_LOG_FORMAT='log_format json escape=json '"'"'{"time":"$time_iso8601","request_id":"$request_id",'\
'"remote":"$remote_addr","method":"$request_method","uri":"$request_uri","status":$status,'\
'"bytes_sent":$bytes_sent,"request_length":$request_length,"request_time":$request_time,'\
'"upstream":"$upstream_addr","upstream_status":"$upstream_status",'\
'"upstream_connect_time":"$upstream_connect_time","upstream_response_time":"$upstream_response_time",'\
'"user_agent":"$http_user_agent","connection":$connection,"connection_requests":$connection_requests}'"'"';'

# nginx_proxy NAME PORT [LOG]: the reverse proxy's config in $WORK/NAME;
# with LOG, a JSON access log to $WORK/NAME/access.log.
nginx_proxy() {
  local name="$1" port="$2" dir="$WORK/$1"
  mkdir -p "$dir"
  {
    nginx_common "$dir"
    echo "http {"
    nginx_http_common "$dir"
    local access=""
    if [[ -n "${3:-}" ]]; then
      echo "  $NGINX_LOG_FORMAT"
      # In the server block: `access_log off` at the http level would cancel it.
      access="access_log $dir/access.log json;"
    fi
    cat <<EOF
  upstream llm {
    server 127.0.0.1:$UPSTREAM_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$port backlog=4096;
    $access
    location = /healthz { access_log off; return 200 'ok'; }
    location / {
      proxy_pass http://llm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  } >"$dir/nginx.conf"
}
NGINX_PROXY_PORT=$(free_port)
nginx_proxy nginx-proxy "$NGINX_PROXY_PORT"
NGINX_LOG_PROXY_PORT=$(free_port)
nginx_proxy nginx-log-proxy "$NGINX_LOG_PROXY_PORT" log

# ---------------------------------------------------------------- switchyard manifests
mkdir -p "$WORK/manifests"
cat >"$WORK/manifests/bench.yaml" <<EOF
apiVersion: switchyard.dev/v1alpha1
kind: ProviderSecret
metadata: {name: upstream}
spec:
  provider: openai-compatible
  baseUrl: http://127.0.0.1:$UPSTREAM_PORT/v1
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelRoute
metadata: {name: bench}
spec:
  targets:
  - {name: up, provider: upstream, model: gpt-4o-mini}
EOF

# start_switchyard NAME RUST_LOG [WRAPPER...]: starts the proxy (under
# WRAPPER, e.g. valgrind, when given); sets SY_PID, SY_PORT, SY_LOG.
start_switchyard() {
  local name="$1" level="$2" admin
  shift 2
  SY_PORT=$(free_port)
  admin=$(free_port)
  SY_LOG="$WORK/$name.log"
  RUST_LOG="$level" "${ON_SUT_CORE[@]}" "$@" "$PROXY_BIN" \
    --manifests "$WORK/manifests" \
    --listen "127.0.0.1:$SY_PORT" --admin-listen "127.0.0.1:$admin" \
    --log-format json --drain-timeout 2s \
    >"$SY_LOG" 2>&1 &
  SY_PID=$!
  PIDS+=("$SY_PID")
  wait_http "http://127.0.0.1:$admin/readyz" "$SY_PID" "switchyard-proxy ($name)" "$SY_LOG"
}

proc_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# check_answer URL WHAT: one request with curl; the answer must be a 200
# chat.completion.
check_answer() {
  local url="$1" what="$2" code
  code=$(curl -sS -o "$WORK/answer.json" -w '%{http_code}' --max-time 5 \
    -H 'Content-Type: application/json' --data "$REQUEST_BODY" "$url") \
    || die "$what: request to $url failed"
  if [[ "$code" != 200 ]] || ! grep -q '"chat.completion"' "$WORK/answer.json"; then
    cat "$WORK/answer.json" >&2 || true
    die "$what: expected a 200 chat.completion from $url, got HTTP $code (body above)"
  fi
}

# run_wrk CONNS SECONDS URL OUTFILE: one pinned wrk run; fails loudly on any
# wrk error; prints the BENCH line.
run_wrk() {
  local conns="$1" secs="$2" url="$3" out="$4" line
  "${ON_LOAD_CORE[@]}" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s --latency \
    -s "$BENCH/chat.lua" "$url" >"$out" 2>&1 \
    || { cat "$out" >&2; die "wrk failed against $url"; }
  line=$(grep '^BENCH ' "$out") || { cat "$out" >&2; die "wrk printed no summary line (see above)"; }
  local errs
  errs=$(sed -n 's/.*err_connect=\([0-9]*\) err_read=\([0-9]*\) err_write=\([0-9]*\) err_status=\([0-9]*\) err_timeout=\([0-9]*\).*/\1 \2 \3 \4 \5/p' <<<"$line")
  read -r ec er ew es et <<<"$errs"
  if [[ "$ec$er$ew$es$et" != 00000 ]]; then
    cat "$out" >&2
    if [[ -n "$SUT_LOG" ]]; then
      echo "--- last lines of $SUT_LOG:" >&2
      tail -n 20 "$SUT_LOG" >&2 || true
    fi
    die "wrk against $url reported errors: connect=$ec read=$er write=$ew non-2xx/3xx=$es timeout=$et"
  fi
  echo "$line"
}

field() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<" $1"; }

declare -A R   # R[key.metric] and R[key.metric.round]
SUT_LOG=""     # log of the system under test, shown when wrk reports errors

# cpu_of KEY: CPU ticks of that path's processes (0 for "direct").
cpu_of() {
  local pids
  read -ra pids <<<"${SUT_PIDS[$1]}"
  if ((${#pids[@]})); then cpu_ticks "${pids[@]}"; else echo 0; fi
}
# steal_ticks: time the hypervisor gave neither core to this VM (clock ticks,
# both cores), from /proc/stat.
steal_ticks() { awk -v a="cpu$SUT_CORE" -v b="cpu$LOAD_CORE" '$1 == a || $1 == b { s += $9 } END { print s }' /proc/stat; }
log_size() { if [[ -n "${ACCESS_LOG[$1]:-}" ]]; then stat -c %s "${ACCESS_LOG[$1]}"; else echo 0; fi; }

# measure_run KEY ROUND CONNS SECONDS ID: one measured run of that path;
# stores rps, requests, p50, p90 and p99 as R[KEY.<metric>.ID.ROUND]. ID
# names the layout and connection count: c<N> with the system under test on
# its own core, s<N> with everything on one core. Run c<CONNS_LAT> adds its
# CPU ticks, log bytes and requests to the path's totals.
measure_run() {
  local key="$1" round="$2" conns="$3" secs="$4" id="$5" line c0 c1 l0 l1 s0 s1 m
  SUT_LOG="${LOGFILE[$key]:-}"
  c0=$(cpu_of "$key")
  l0=$(log_size "$key")
  s0=$(steal_ticks)
  line=$(run_wrk "$conns" "$secs" "${URL[$key]}" "$WORK/$key.$id.r$round.txt")
  s1=$(steal_ticks)
  c1=$(cpu_of "$key")
  l1=$(log_size "$key")
  for m in rps requests p50_us p90_us p99_us duration_s; do
    R[$key.$m.$id.$round]=$(field "$line" "$m")
  done
  # Share of the two cores' time taken by the hypervisor during the run.
  R[$key.steal.$id.$round]=$(awk -v t=$((s1 - s0)) -v hz="$CLK_TCK" -v d="${R[$key.duration_s.$id.$round]}" \
    'BEGIN { printf "%.2f", 100 * t / hz / (2 * d) }')
  if [[ $id == "c$CONNS_LAT" ]]; then
    R[$key.ticks]=$((${R[$key.ticks]:-0} + c1 - c0))
    R[$key.log_bytes]=$((${R[$key.log_bytes]:-0} + l1 - l0))
    R[$key.requests]=$((${R[$key.requests]:-0} + ${R[$key.requests.$id.$round]}))
  fi
  log "round $round, $key, $id: $(f1 "${R[$key.rps.$id.$round]}") req/s, p50 ${R[$key.p50_us.$id.$round]} us, p99 ${R[$key.p99_us.$id.$round]} us"
}

# rounds TAG CONNS SECONDS [CONNS SECONDS...]: ROUNDS rounds; in each, every
# path runs once per CONNS/SECONDS pair (run id TAG<CONNS>), the starting path rotating from round to
# round, so that slow drifts of the machine spread over all paths and each
# proxy's run is close in time to the baselines'.
rounds() {
  local tag="$1" round i key
  shift
  for ((round = 1; round <= ROUNDS; round++)); do
    local order=()
    for ((i = 0; i < ${#NAMES[@]}; i++)); do order+=("${NAMES[(i + round - 1) % ${#NAMES[@]}]}"); done
    local pairs=("$@")
    while ((${#pairs[@]})); do
      for key in "${order[@]}"; do measure_run "$key" "$round" "${pairs[0]}" "${pairs[1]}" "$tag${pairs[0]}"; done
      pairs=("${pairs[@]:2}")
    done
  done
}

# median / lowest / highest of the arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
lowest() { printf '%s\n' "$@" | sort -g | head -n 1; }
highest() { printf '%s\n' "$@" | sort -g | tail -n 1; }
f1() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }

# per_round KEY METRIC ID: that figure of every round, one per word.
per_round() {
  local r out=()
  for ((r = 1; r <= ROUNDS; r++)); do out+=("${R[$1.$2.$3.$r]}"); done
  echo "${out[@]}"
}

# ---------------------------------------------------------------- run
# How busy the machine is before anything starts (other builds, tests...):
# CPU busy share over one second, from /proc/stat.
cpu_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }
read -r b0 t0 < <(cpu_busy)
sleep 1
read -r b1 t1 < <(cpu_busy)
BUSY=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.0f", (t > 0 ? 100 * b / t : 0) }')
log "machine CPU busy before start: $BUSY % of $(nproc --all) cores"
NOISE=""
if ((BUSY > 10)); then
  NOISE="**Warning: the machine was ${BUSY} % busy with other work before the run; these figures are noisy.**"
  log "WARNING: the machine is not idle ($BUSY % busy); figures will be noisy"
fi

declare -A URL SUT_PIDS LOGFILE ACCESS_LOG
log "starting upstream nginx on 127.0.0.1:$UPSTREAM_PORT (core $LOAD_CORE)"
start_nginx upstream load
UPSTREAM_PID=$NGINX_PID
wait_http "http://127.0.0.1:$UPSTREAM_PORT/healthz" "$UPSTREAM_PID" "upstream nginx" "$WORK/upstream/error.log"
check_answer "http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions" "upstream"
URL[direct]="http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions"
SUT_PIDS[direct]=""
LOGFILE[direct]="$WORK/upstream/error.log"

# callgrind_count: switchyard-proxy's user-space instructions per request
# (all threads) over BENCH_CALLGRIND_SECONDS of load, counted from after a
# warm-up; prints one line and writes bench/out/callgrind-latest.txt.
callgrind_count() {
  local secs="${BENCH_CALLGRIND_SECONDS:-10}" out="$WORK/callgrind.out" line requests total
  log "starting switchyard-proxy under callgrind (core $SUT_CORE)"
  start_switchyard callgrind warn valgrind --tool=callgrind --callgrind-out-file="$out"
  local url="http://127.0.0.1:$SY_PORT/v1/chat/completions"
  check_answer "$url" "switchyard-proxy under callgrind"
  SUT_LOG="$SY_LOG"
  run_wrk "$CONNS_LAT" 2 "$url" "$WORK/callgrind.warm.txt" >/dev/null
  callgrind_control -z "$SY_PID" >/dev/null 2>&1 || die "callgrind_control -z failed"
  line=$(run_wrk "$CONNS_LAT" "$secs" "$url" "$WORK/callgrind.run.txt")
  callgrind_control -d "$SY_PID" >/dev/null 2>&1 || die "callgrind_control -d failed"
  requests=$(field "$line" requests)
  total=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  [[ -n "$total" && "$requests" -gt 0 ]] || die "no instruction count in $out.1"
  mkdir -p "$OUT"
  printf 'commit %s: %d instructions per request (%s instructions, %s requests in %s s at %s connections)\n' \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" "$((total / requests))" \
    "$total" "$requests" "$secs" "$CONNS_LAT" | tee "$OUT/callgrind-latest.txt"
}
if [[ "${BENCH_CALLGRIND:-0}" == 1 ]]; then
  callgrind_count
  exit 0
fi

# start_nginx_proxy KEY NAME PORT: starts that reverse proxy on core SUT_CORE.
start_nginx_proxy() {
  local key="$1" name="$2" port="$3"
  log "starting $name on 127.0.0.1:$port (core $SUT_CORE)"
  start_nginx "$name" sut
  wait_http "http://127.0.0.1:$port/healthz" "$NGINX_PID" "$name" "$WORK/$name/error.log"
  check_answer "http://127.0.0.1:$port/v1/chat/completions" "$name"
  URL[$key]="http://127.0.0.1:$port/v1/chat/completions"
  SUT_PIDS[$key]="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
  LOGFILE[$key]="$WORK/$name/error.log"
}
start_nginx_proxy nginx nginx-proxy "$NGINX_PROXY_PORT"
start_nginx_proxy nginx_log nginx-log-proxy "$NGINX_LOG_PROXY_PORT"
ACCESS_LOG[nginx_log]="$WORK/nginx-log-proxy/access.log"

# Switchyard, RUST_LOG=warn (no per-request access log) and default info.
for variant in warn info; do
  key="sy_$variant"
  log "starting switchyard-proxy RUST_LOG=$variant (core $SUT_CORE)"
  start_switchyard "$key" "$variant"
  R[$key.idle_kib]=$(proc_kib "$SY_PID" VmRSS)
  R[$key.threads]=$(proc_kib "$SY_PID" Threads)
  check_answer "http://127.0.0.1:$SY_PORT/v1/chat/completions" "switchyard-proxy ($variant)"
  URL[$key]="http://127.0.0.1:$SY_PORT/v1/chat/completions"
  SUT_PIDS[$key]="$SY_PID"
  LOGFILE[$key]="$SY_LOG"
  ACCESS_LOG[$key]="$SY_LOG"
done

NAMES=(direct nginx nginx_log sy_warn sy_info)
for key in "${NAMES[@]}"; do
  log "$key: warm-up ${WARMUP}s at $CONNS_TPUT connections"
  SUT_LOG="${LOGFILE[$key]}"
  run_wrk "$CONNS_TPUT" "$WARMUP" "${URL[$key]}" "$WORK/$key.warm.txt" >/dev/null
done
rounds c "$CONNS_LAT" "$DURATION" "$CONNS_TPUT" "$DURATION" 1 "$DURATION_SINGLE"

# Latency once more with everything on core LOAD_CORE: the load generator,
# the upstream and the system under test. On a VM, waking a vCPU that went
# idle costs tens to hundreds of microseconds (one hop through either proxy
# at 1 connection takes about ten times as long as direct in the two-core
# layout); on one core no request crosses cores, so the difference to the
# direct path is the proxy's own work and one more process to schedule.
log "moving the systems under test to core $LOAD_CORE"
for key in nginx nginx_log sy_warn sy_info; do
  for pid in ${SUT_PIDS[$key]}; do taskset -a -p -c "$LOAD_CORE" "$pid" >/dev/null; done
done
rounds s "$CONNS_LAT" "$DURATION" 1 "$DURATION_SINGLE"
for key in sy_warn sy_info; do R[$key.peak_kib]=$(proc_kib "${SUT_PIDS[$key]}" VmHWM); done

# Per-round comparisons: each proxy against the baselines of the same round.
# `like` pairs each Switchyard variant with the nginx that logs alike: warn
# (no access log) with nginx, info (a JSON line per request) with nginx_log.
for key in nginx nginx_log sy_warn sy_info; do
  for ((round = 1; round <= ROUNDS; round++)); do
    for id in "c$CONNS_LAT" "s$CONNS_LAT" s1; do
      R[$key.added.$id.$round]=$(awk -v a="${R[$key.p99_us.$id.$round]}" \
        -v b="${R[direct.p99_us.$id.$round]}" 'BEGIN { print a - b }')
    done
    for id in "c$CONNS_LAT" "c$CONNS_TPUT"; do
      R[$key.ratio.$id.$round]=$(awk -v a="${R[$key.rps.$id.$round]}" \
        -v b="${R[nginx.rps.$id.$round]}" 'BEGIN { print a / b }')
    done
    R[$key.like.c$CONNS_TPUT.$round]=${R[$key.ratio.c$CONNS_TPUT.$round]}
    if [[ $key == sy_info ]]; then
      R[$key.like.c$CONNS_TPUT.$round]=$(awk -v a="${R[$key.rps.c$CONNS_TPUT.$round]}" \
        -v b="${R[nginx_log.rps.c$CONNS_TPUT.$round]}" 'BEGIN { print a / b }')
    fi
  done
done

# ---------------------------------------------------------------- report
ms() { awk -v x="$1" 'BEGIN { printf "%.3f", x / 1000 }'; }
ms_signed() { awk -v x="$1" 'BEGIN { printf "%+.3f", x / 1000 }'; }
mib() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 1024 }'; }
x2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
# Three decimals in verdicts, so that a FAIL never reads "0.80×".
times() { awk -v x="$1" 'BEGIN { printf "%.3f×", x }'; }
ms_unit() { echo "$(ms_signed "$1") ms"; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo FAIL; fi; }
# med KEY METRIC ID: the median over the rounds.
med() { median $(per_round "$1" "$2" "$3"); }
# added KEY ID: the median p99 added to the direct path's, "—" for direct.
added() { if [[ $1 == direct ]]; then echo "—"; else ms_signed "$(med "$1" added "$2")"; fi; }
# spread KEY METRIC ID FORMAT: "lowest to highest" over the rounds.
spread() { echo "$("$4" "$(lowest $(per_round "$1" "$2" "$3"))") to $("$4" "$(highest $(per_round "$1" "$2" "$3"))")"; }

CPU_MODEL=$(awk -F': ' '/^model name/ { name = $2 } /^cpu family/ { fam = $2 } /^model\t/ { mod = $2 }
  END { printf "%s (family %s, model %s)", name, fam, mod }' /proc/cpuinfo)
VM=$(systemd-detect-virt -v 2>/dev/null) || VM=none
if [[ $VM == none ]] && grep -qw hypervisor /proc/cpuinfo; then VM="a hypervisor"; fi
CONTAINER=$(systemd-detect-virt -c 2>/dev/null) || CONTAINER=none
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')
WRK_VERSION=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }' || true)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
declare -A LABEL=([direct]="direct to upstream" [nginx]="nginx reverse proxy" \
  [nginx_log]="nginx reverse proxy (JSON access log)" \
  [sy_warn]="switchyard (RUST_LOG=warn)" [sy_info]="switchyard (info, JSON access log)")

REPORT="$OUT/latest.md"
L=$CONNS_LAT
T=$CONNS_TPUT
{
  echo "## Switchyard benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc --all) cores, $CPU_MODEL, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
    "Linux $(uname -r), VM: $VM, container: $CONTAINER; CPU busy before start ${BUSY} %. nginx $NGINX_VERSION, wrk ${WRK_VERSION:-?}, commit $COMMIT."
  echo "All at nice $NICE. $ROUNDS rounds of each layout, after one ${WARMUP} s warm-up per path; each run ${DURATION} s" \
    "(${DURATION_SINGLE} s at 1 connection). Figures are medians over the rounds; latency in ms."
  [[ -z "$NOISE" ]] || { echo; echo "$NOISE"; }
  echo
  echo "**Two cores**: the system under test on core $SUT_CORE, the upstream nginx and wrk (1 thread) on core $LOAD_CORE."
  echo
  echo "| path | req/s @$L | p50 @$L | p90 @$L | p99 @$L | p99 added vs direct @$L | req/s @$T | p99 @$T | p50 / p99 @1 | proxy CPU µs/req @$L |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for k in "${NAMES[@]}"; do
    cpu="—"
    [[ $k == direct ]] || cpu=$(awk -v t="${R[$k.ticks]}" -v hz="$CLK_TCK" -v n="${R[$k.requests]}" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    echo "| ${LABEL[$k]} | $(f1 "$(med "$k" rps "c$L")") | $(ms "$(med "$k" p50_us "c$L")") | $(ms "$(med "$k" p90_us "c$L")") | $(ms "$(med "$k" p99_us "c$L")") | $(added "$k" "c$L") | $(f1 "$(med "$k" rps "c$T")") | $(ms "$(med "$k" p99_us "c$T")") | $(ms "$(med "$k" p50_us c1)") / $(ms "$(med "$k" p99_us c1)") | $cpu |"
  done
  echo
  echo "**One core**: everything on core $LOAD_CORE, so that no request waits for another vCPU to wake up."
  echo
  echo "| path | req/s @$L | p50 @$L | p90 @$L | p99 @$L | p99 added vs direct @$L | p50 / p99 @1 | p99 added @1 |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for k in "${NAMES[@]}"; do
    echo "| ${LABEL[$k]} | $(f1 "$(med "$k" rps "s$L")") | $(ms "$(med "$k" p50_us "s$L")") | $(ms "$(med "$k" p90_us "s$L")") | $(ms "$(med "$k" p99_us "s$L")") | $(added "$k" "s$L") | $(ms "$(med "$k" p50_us s1)") / $(ms "$(med "$k" p99_us s1)") | $(added "$k" s1) |"
  done
  echo
  echo "Each round compares a proxy with the baselines measured in the same round (median, and lowest to highest over the rounds):"
  echo
  echo "| proxy | throughput vs nginx @$T | vs nginx with access log @$T | vs nginx @$L | p99 added @$L, two cores (ms) | p99 added @$L, one core (ms) | steal @$L, two cores (%) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for k in nginx nginx_log sy_warn sy_info; do
    if [[ $k == nginx ]]; then r64="—"; r8="—"; else
      r64="$(x2 "$(med "$k" ratio "c$T")")× ($(spread "$k" ratio "c$T" x2))"
      r8="$(x2 "$(med "$k" ratio "c$L")")× ($(spread "$k" ratio "c$L" x2))"
    fi
    rl="—"
    [[ $k == sy_info ]] && rl="$(x2 "$(med "$k" like "c$T")")× ($(spread "$k" like "c$T" x2))"
    echo "| ${LABEL[$k]} | $r64 | $rl | $r8 | $(ms_signed "$(med "$k" added "c$L")") ($(spread "$k" added "c$L" ms_signed)) | $(ms_signed "$(med "$k" added "s$L")") ($(spread "$k" added "s$L" ms_signed)) | $(med "$k" steal "c$L") ($(spread "$k" steal "c$L" echo)) |"
  done
  echo
  echo "Steal: the share of the two cores' time the hypervisor gave to other guests during the runs at $L connections" \
    "(from /proc/stat, counted in whole clock ticks; the direct path's: $(med direct steal "c$L") %)."
  echo
  echo "| switchyard | idle RSS | peak RSS (VmHWM) | threads | log bytes/req |"
  echo "|---|---:|---:|---:|---:|"
  for k in sy_warn sy_info; do
    echo "| ${LABEL[$k]} | $(mib "${R[$k.idle_kib]}") MiB | $(mib "${R[$k.peak_kib]}") MiB | ${R[$k.threads]} | $(awk -v b="${R[$k.log_bytes]}" -v n="${R[$k.requests]}" 'BEGIN { printf "%.0f", b / n }') |"
  done
  echo
  echo "nginx's JSON access log: $(awk -v b="${R[nginx_log.log_bytes]}" -v n="${R[nginx_log.requests]}" 'BEGIN { printf "%.0f", b / n }') bytes per request."
  echo
  echo "| target (median over the rounds) | nginx | nginx with access log | switchyard (RUST_LOG=warn) | switchyard (info) |"
  echo "|---|---|---|---|---|"
  # row TITLE METRIC ID TEST FORMAT: one verdict per path; {} in TEST is
  # that path's median, FORMAT the function that prints it.
  row() {
    local title="$1" metric="$2" id="$3" test="$4" format="$5" line k v
    line="| $title |"
    for k in nginx nginx_log sy_warn sy_info; do
      if [[ ($metric == ratio || $metric == like) && $k == nginx* ]]; then line+=" — |"; continue; fi
      v=$(med "$k" "$metric" "$id")
      line+=" $(verdict "${test//\{\}/$v}") ($("$format" "$v")) |"
    done
    echo "$line"
  }
  row "throughput ≥ ${TARGET_RATIO}× the nginx that logs alike @$T" like "c$T" "{} >= $TARGET_RATIO" times
  row "throughput ≥ ${TARGET_RATIO}× nginx without access log @$T" ratio "c$T" "{} >= $TARGET_RATIO" times
  row "p99 added < ${TARGET_P99_ADDED_MS} ms @$L, two cores" added "c$L" "{} / 1000 < $TARGET_P99_ADDED_MS" ms_unit
  row "p99 added < ${TARGET_P99_ADDED_MS} ms @$L, one core" added "s$L" "{} / 1000 < $TARGET_P99_ADDED_MS" ms_unit
  echo "| peak RSS < ${TARGET_PEAK_MIB} MiB | — | — | $(verdict "${R[sy_warn.peak_kib]} / 1024 < $TARGET_PEAK_MIB") ($(mib "${R[sy_warn.peak_kib]}") MiB) | $(verdict "${R[sy_info.peak_kib]} / 1024 < $TARGET_PEAK_MIB") ($(mib "${R[sy_info.peak_kib]}") MiB) |"
} >"$REPORT"

echo
cat "$REPORT"
echo
log "written to ${REPORT#"$ROOT"/}"
