#!/usr/bin/env bash
# Side-by-side benchmark of fanout against no proxy, HAProxy (mode tcp, one thread) and nginx's
# stream proxy (one worker).
#
# One run measures, through each target, with the same wrk settings and the same CPU pinning:
#   direct          wrk -> nginx                               (the baseline: no proxy at all)
#   relay           wrk -> fanout relay  -> nginx
#   duplex          wrk -> fanout duplex -> nginx (+ a secondary nginx port whose answers are compared)
#   haproxy         wrk -> haproxy (mode tcp, nbthread 1) -> nginx
#   nginx-stream    wrk -> nginx stream proxy (1 worker, a process of its own) -> nginx
#   haproxy-splice  the same HAProxy with option splice-auto
# and, only when BENCH_TARGETS names them:
#   relay-copy      fanout relay --splice never
#   relay-splice    fanout relay --splice always
#   relay-2t        fanout relay --threads 2, on both CPUs (shared with the load)
# and reports requests/s, p99 latency, the proxy's CPU per request, and MB/s for a large download,
# then ratios against direct, HAProxy and nginx stream. See bench/README.md for the knobs.
#
# All traffic goes to 127.0.0.1. Every process this script starts is stopped on exit, Ctrl-C included.
set -euo pipefail

# ---------------------------------------------------------------------------------------------- knobs
DURATION=${BENCH_DURATION:-10s}          # wrk -d, per measured run
WARMUP=${BENCH_WARMUP:-1s}               # wrk -d of the unmeasured warm-up before each run; 0 skips it
CONNECTIONS=${BENCH_CONNECTIONS:-64}     # wrk -c
THREADS=${BENCH_THREADS:-1}              # wrk -t
RUNS=${BENCH_RUNS:-3}                    # rounds; each metric is the median over the rounds
TARGETS=${BENCH_TARGETS:-direct,relay,duplex,haproxy,nginx-stream,haproxy-splice}
NEW_CONN=${BENCH_NEW_CONN:-0}            # 1: "Connection: close", a new TCP connection per request
WAIT_QUIET=${BENCH_WAIT_QUIET:-0}        # wait up to this many seconds for the machine to be <10% busy
LARGE_FETCHES=${BENCH_LARGE_FETCHES:-1}  # downloads of /large per target per round (one keep-alive connection)
# BENCH_SMALL_BYTES, BENCH_LARGE_MIB, BENCH_PIN, BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_NICE,
# BENCH_FANOUT_BIN, BENCH_FANOUT_ARGS(_<T>), BENCH_HAPROXY_*, BENCH_NGINX_STREAM and BENCH_INSTALL
# are read by lib.sh.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

keep_results() { # raw wrk/curl output and configs of the last run, for a look after the fact
    mkdir -p "$RESULTS_DIR"
    rm -rf "$RESULTS_DIR/last-run"
    cp -r "$WORK" "$RESULTS_DIR/last-run"
}

to_ms() {        # wrk latency ("812.00us", "1.25ms", "2.01s", "1.00m") -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f\n", n }'
}

# -------------------------------------------------------------------------------------------- setup
parse_targets "$TARGETS"
need nginx nginx
need wrk wrk
need curl curl
prepare
make_workdir
make_www
start_backends
for t in "${TARGET_LIST[@]}"; do
    start_target "$t" || fail "$t" "$START_ERROR"
done

# --------------------------------------------------------------------------------------- measuring
WRK_ARGS=(-t "$THREADS" -c "$CONNECTIONS" --latency)
[[ $NEW_CONN == 1 ]] && WRK_ARGS+=(-H "Connection: close")

check_target() { # GET /small through the target must return the file, byte for byte
    local t=$1 addr=${ADDR[$1]}
    if ! run_child /dev/null curl -sf --max-time 5 -o "$WORK/check.small" "http://$addr/small"; then
        fail "$t" "GET /small failed"
        return 1
    fi
    if ! cmp -s "$WORK/check.small" "$WORK/www/small"; then
        fail "$t" "GET /small returned other bytes than the file"
        return 1
    fi
}

measure_rps() {  # measure_rps TARGET ROUND: one wrk run; records rps, p99, CPU/req
    local t=$1 round=$2 addr=${ADDR[$1]} out="$WORK/logs/wrk-$1-$2.txt"
    if [[ $WARMUP != 0 ]]; then
        run_child /dev/null "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d "$WARMUP" "http://$addr/small" || true
    fi
    sample_begin "$t"
    if ! run_child "$out" "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d "$DURATION" "http://$addr/small"; then
        fail "$t" "wrk exited non-zero (see $out)"
        return 1
    fi
    sample_end "$t" || { fail "$t" "proxy process died"; return 1; }
    local rps reqs p99 errs
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    errs=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
                /Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' "$out")
    if [[ -z $rps || -z $reqs || -z $p99 ]]; then
        fail "$t" "could not read wrk's output (see $out)"
        return 1
    fi
    if ((errs > 0)) || ((reqs == 0)); then
        fail "$t" "wrk saw $errs errors/non-2xx in $reqs requests (round $round)"
        return 1
    fi
    record "$t" rps "$rps"
    record "$t" p99 "$(to_ms "$p99")"
    if [[ -n ${PROXY_PID[$t]:-} ]]; then
        record "$t" cpu "$(awk -v d="$S_TICKS" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.3f\n", d / hz * 1e6 / n }')"
        record "$t" cpupct "$(sample_pct)"
    fi
    local others=""
    if [[ -n $S_OTHERS ]]; then
        record "$t" others "$S_OTHERS"
        others=", others on cpu $PROXY_CPU: $S_OTHERS%"
    fi
    log "  $t round $round: $rps req/s, p99 $p99, $reqs requests$others"
}

measure_mbps() { # measure_mbps TARGET ROUND: LARGE_FETCHES downloads on one connection
    local t=$1 round=$2 addr=${ADDR[$1]} i urls=() out="$WORK/logs/curl-$1-$2.txt"
    for ((i = 0; i < LARGE_FETCHES; i++)); do urls+=(-o /dev/null "http://$addr/large"); done
    sample_begin "$t"
    if ! run_child "$out" "${PIN_LOAD[@]}" curl -s --max-time 120 -w '%{http_code} %{size_download}\n' \
        "${urls[@]}"; then :; fi
    sample_end "$t" || { fail "$t" "proxy process died"; return 1; }
    local good
    good=$(awk -v n="$LARGE_BYTES" '$1 == 200 && $2 == n { c++ } END { print c + 0 }' "$out")
    if ((good != LARGE_FETCHES)); then
        fail "$t" "only $good of $LARGE_FETCHES large downloads came back whole (see $out)"
        return 1
    fi
    record "$t" mbps "$(awk -v b=$((LARGE_BYTES * LARGE_FETCHES)) -v ns="$S_NS" 'BEGIN { printf "%.0f\n", b / 1e6 / (ns / 1e9) }')"
    if [[ -n ${PROXY_PID[$t]:-} ]]; then
        record "$t" cpugib "$(awk -v d="$S_TICKS" -v hz="$CLK_TCK" -v b=$((LARGE_BYTES * LARGE_FETCHES)) \
            'BEGIN { printf "%.0f\n", d / hz * 1000 / (b / 1073741824) }')"
    fi
    log "  $t round $round: $(tail -n1 "$WORK/res/$t.mbps") MB/s"
}

# ------------------------------------------------------------------------------------------- the run
begin_run
log "targets: $TARGETS; wrk ${WRK_ARGS[*]} -d $DURATION; $RUNS round(s); pinning: $PINNING"

for t in "${TARGET_LIST[@]}"; do
    failed "$t" || check_target "$t" || true
done
for ((round = 1; round <= RUNS; round++)); do
    log "round $round of $RUNS"
    # Round-robin, so drift from other load on the machine spreads over every target alike.
    for t in "${TARGET_LIST[@]}"; do
        failed "$t" || measure_rps "$t" "$round" || true
        failed "$t" || measure_mbps "$t" "$round" || true
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------------------------------ the report
medians rps p99 cpu cpupct others mbps cpugib

versus() {       # versus REF NAME: relay against REF in one line, with the ratio of each round
    echo "**fanout relay vs $2: req/s $(ratio "${M[relay.rps]}" "${M[$1.rps]}")," \
        "CPU/req $(ratio "${M[relay.cpu]}" "${M[$1.cpu]}")** (medians; per round: req/s" \
        "$(per_round relay "$1" rps), CPU/req $(per_round relay "$1" cpu))."
}
verdict() {      # the comparison fanout is built for: relay against HAProxy; and against nginx stream
    if usable relay && usable haproxy; then
        local rps cpu goal="met"
        rps=$(ratio "${M[relay.rps]}" "${M[haproxy.rps]}")
        cpu=$(ratio "${M[relay.cpu]}" "${M[haproxy.cpu]}")
        awk -v r="${rps%x}" -v c="${cpu%x}" 'BEGIN { exit !(r > 1 && c < 1) }' || goal="NOT met"
        echo
        echo "$(versus haproxy HAProxy) Goal (req/s > 1x and CPU/req < 1x): $goal."
    fi
    if usable relay && usable nginx-stream; then
        echo
        versus nginx-stream "nginx stream"
    fi
    return 0
}

REPORT="$WORK/report.md"
{
    echo "# fanout benchmark, $STARTED_AT"
    echo
    echo "- wrk ${WRK_ARGS[*]} -d $DURATION (warm-up $WARMUP) on GET /small ($SMALL_BYTES-byte body)$([[ $NEW_CONN == 1 ]] && echo ", a new connection per request"); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
    echo "- throughput: $LARGE_FETCHES x $LARGE_MIB MiB GET /large with curl over one connection"
    run_header
    echo "- $RUNS round(s), targets round-robin; each number is the median over the rounds"
    echo "- command: $(env | grep '^BENCH_' | sort | tr '\n' ' ')bench/run.sh"
    echo
    echo "| target | req/s | p99 ms | proxy CPU µs/req | proxy CPU % | others on proxy CPU % | MB/s | proxy CPU ms/GiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for t in "${TARGET_LIST[@]}"; do
        if failed "$t"; then
            echo "| ${LABEL[$t]} | FAILED: $(<"$WORK/res/$t.fail") |||||||"
            continue
        fi
        echo "| ${LABEL[$t]} | $(fmt "${M[$t.rps]}" 0) | $(fmt "${M[$t.p99]}" 3) | $(fmt "${M[$t.cpu]}" 2) | $(fmt "${M[$t.cpupct]}" 0) | $(fmt "${M[$t.others]}" 0) | $(fmt "${M[$t.mbps]}" 0) | $(fmt "${M[$t.cpugib]}" 0) |"
    done
    echo
    echo "Ratios: req/s and MB/s higher is better; p99 and CPU lower is better."
    ratio_table direct rps:req/s p99:p99 mbps:MB/s
    ratio_table haproxy rps:req/s p99:p99 cpu:CPU/req mbps:MB/s cpugib:CPU/GiB
    ratio_table nginx-stream rps:req/s p99:p99 cpu:CPU/req mbps:MB/s cpugib:CPU/GiB
    verdict
} >"$REPORT"

publish_report latest.md "raw wrk/curl output in $RESULTS_DIR/last-run/" "the numbers above are not a valid comparison"
