#!/usr/bin/env bash
# What `--capture` costs the relay: wrk -> fanout relay -> nginx, with and without --capture, in
# one run, alternating the two for CAPTURE_RUNS rounds on the same machine state. Prints the
# median requests/s, p99 latency and the proxy's CPU time per request of each, and the ratio.
#
#   bench/capture.sh                          # 3 rounds of 10 s, 64 connections, 64-byte answers
#   CAPTURE_DURATION=5s CAPTURE_RUNS=5 bench/capture.sh
#
# Needs nginx, wrk and taskset (apt-get install nginx wrk util-linux). fanout is pinned to CPU 1,
# nginx and wrk to CPU 0 (set CAPTURE_PIN=0 to not pin). The capture goes to a temp dir (tmpfs
# or disk, wherever mktemp puts it) and rotates at CAPTURE_MAX_SIZE.
set -euo pipefail

DURATION=${CAPTURE_DURATION:-10s}
RUNS=${CAPTURE_RUNS:-3}
CONNECTIONS=${CAPTURE_CONNECTIONS:-64}
BODY=${CAPTURE_BODY_BYTES:-64}
MAX_SIZE=${CAPTURE_MAX_SIZE:-256MiB}
PIN=${CAPTURE_PIN:-1}
NGINX_PORT=${CAPTURE_NGINX_PORT:-18480}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
log() { printf '[capture-bench] %s\n' "$*" >&2; }
pin() { if [[ $PIN == 1 ]]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

for tool in nginx wrk; do command -v "$tool" >/dev/null || { log "needs $tool"; exit 1; }; done
log "building fanout (release)"
(cd "$REPO" && cargo build --release -q -p fanout-io)
FANOUT="$REPO/target/release/fanout"

mkdir -p "$WORK/www" "$WORK/nginx"
head -c "$BODY" /dev/zero | tr '\0' x >"$WORK/www/small"
cat >"$WORK/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$NGINX_PORT; root $WORK/www; }
}
EOF
if [[ $PIN == 1 ]]; then taskset -c 0 nginx -c "$WORK/nginx.conf" & else nginx -c "$WORK/nginx.conf" & fi
PIDS+=($!)
sleep 0.5

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure LABEL [fanout flags...]: one wrk run through a fresh relay; appends "rps p99_ms cpu_us_per_req"
measure() {
    local label=$1; shift
    # Not through the `pin` function: $! must be fanout itself (taskset execs it), for its CPU
    # time and its exit status.
    local cmd=("$FANOUT" relay --listen 127.0.0.1:0 --to "127.0.0.1:$NGINX_PORT" "$@")
    [[ $PIN == 1 ]] && cmd=(taskset -c 1 "${cmd[@]}")
    : >"$WORK/fanout.out" # now, not in the child: the loop below must not read the last run's line
    "${cmd[@]}" >"$WORK/fanout.out" 2>"$WORK/fanout.err" &
    local pid=$! addr="" i
    PIDS+=("$pid") # stopped by the EXIT trap if this run fails half-way
    for ((i = 0; i < 100; i++)); do
        addr=$(sed -n 's/^listening on //p' "$WORK/fanout.out")
        [[ -n $addr ]] && break
        sleep 0.05
    done
    [[ -n $addr ]] || { log "fanout did not start: $(cat "$WORK/fanout.err")"; exit 1; }
    pin 0 wrk -t 1 -c "$CONNECTIONS" -d 1s "http://$addr/small" >/dev/null # warm-up
    local before after hz
    before=$(cpu_ticks "$pid")
    pin 0 wrk -t 1 -c "$CONNECTIONS" -d "$DURATION" --latency "http://$addr/small" >"$WORK/wrk.out"
    after=$(cpu_ticks "$pid")
    hz=$(getconf CLK_TCK)
    kill -TERM "$pid"
    wait "$pid" || { log "fanout exited non-zero: $(cat "$WORK/fanout.err")"; exit 1; }
    awk -v label="$label" -v ticks=$((after - before)) -v hz="$hz" '
        /Requests\/sec/ { rps = $2 }
        /^ +99%/ { v = $2; n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
                   if (u == "us") n /= 1000; else if (u == "s") n *= 1000; p99 = n }
        /requests in/ { reqs = $1 }
        END { printf "%s %.0f %.3f %.2f\n", label, rps, p99, ticks / hz * 1e6 / reqs }
    ' "$WORK/wrk.out" >>"$WORK/results"
}

for ((round = 1; round <= RUNS; round++)); do
    log "round $round/$RUNS"
    measure plain
    rm -f "$WORK"/capture.fcap*
    measure capture --capture "$WORK/capture.fcap" --capture-max-size "$MAX_SIZE"
    log "  capture wrote $(du -cb "$WORK"/capture.fcap* | tail -1 | cut -f1) bytes in $(ls "$WORK"/capture.fcap* | wc -l) file(s)"
    "$FANOUT" replay --engine "$WORK/capture.fcap" >&2
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v l="$1" -v c="$2" '$1 == l { print $c }' "$WORK/results" | median; }
printf '\nfanout relay, wrk -c %s, %s-byte answers, %s x %s (medians)\n' "$CONNECTIONS" "$BODY" "$RUNS" "$DURATION"
printf '%-28s %12s %10s %14s\n' target 'requests/s' 'p99 ms' 'CPU us/req'
for l in plain capture; do
    printf '%-28s %12s %10s %14s\n' "$([[ $l == plain ]] && echo "(b) relay" || echo "(b') relay --capture")" \
        "$(col $l 2)" "$(col $l 3)" "$(col $l 4)"
done
awk -v a="$(col plain 2)" -v b="$(col capture 2)" -v c="$(col plain 4)" -v d="$(col capture 4)" \
    'BEGIN { printf "capture / plain: requests/s x%.3f, CPU per request x%.3f\n", b / a, d / c }'
