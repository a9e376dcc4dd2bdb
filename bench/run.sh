#!/usr/bin/env bash
# Side-by-side benchmark of fanout against no proxy and against HAProxy (mode tcp, one thread).
#
# One run measures, through each target, with the same wrk settings and the same CPU pinning:
#   direct   wrk -> nginx                               (the baseline: no proxy at all)
#   relay    wrk -> fanout relay  -> nginx
#   duplex   wrk -> fanout duplex -> nginx (+ a secondary nginx port whose answers are compared)
#   haproxy  wrk -> haproxy (mode tcp, nbthread 1) -> nginx
# and reports requests/s, p99 latency, the proxy's CPU per request, and MB/s for a large download.
# See bench/README.md for the knobs and how to read the ratios.
#
# All traffic goes to 127.0.0.1. Every process this script starts is stopped on exit, Ctrl-C included.
set -euo pipefail

# ---------------------------------------------------------------------------------------------- knobs
DURATION=${BENCH_DURATION:-10s}          # wrk -d, per measured run
WARMUP=${BENCH_WARMUP:-1s}               # wrk -d of the unmeasured warm-up before each run; 0 skips it
CONNECTIONS=${BENCH_CONNECTIONS:-64}     # wrk -c
THREADS=${BENCH_THREADS:-1}              # wrk -t
RUNS=${BENCH_RUNS:-3}                    # rounds; each metric is the median over the rounds
TARGETS=${BENCH_TARGETS:-direct,relay,duplex,haproxy}
NEW_CONN=${BENCH_NEW_CONN:-0}            # 1: "Connection: close", a new TCP connection per request
WAIT_QUIET=${BENCH_WAIT_QUIET:-0}        # wait up to this many seconds for the machine to be <10% busy
LARGE_FETCHES=${BENCH_LARGE_FETCHES:-1}  # downloads of /large per target per round (one keep-alive connection)
# BENCH_SMALL_BYTES, BENCH_LARGE_MIB, BENCH_PIN, BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_NICE, BENCH_FANOUT_BIN and
# BENCH_INSTALL are read by lib.sh.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

keep_results() { # raw wrk/curl output and configs of the last run, for a look after the fact
    mkdir -p "$RESULTS_DIR"
    rm -rf "$RESULTS_DIR/last-run"
    cp -r "$WORK" "$RESULTS_DIR/last-run"
}

fail() {         # fail TARGET REASON: the target is out of the remaining rounds; the run exits 1
    log "FAILED $1: $2"
    echo "$2" >"$WORK/res/$1.fail"
}
failed() { [[ -e $WORK/res/$1.fail ]]; }

median() {       # median of the numbers in a file, one a line; "nan" when empty
    [[ -s $1 ]] || { echo nan; return 0; }
    sort -g "$1" | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

to_ms() {        # wrk latency ("812.00us", "1.25ms", "2.01s", "1.00m") -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f\n", n }'
}

# -------------------------------------------------------------------------------------------- setup
IFS=, read -r -a TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
    [[ -n ${LABEL[$t]:-} ]] || die "unknown target '$t' in BENCH_TARGETS (direct,relay,duplex,haproxy)"
done
NEEDS_FANOUT=0
if [[ " ${TARGET_LIST[*]} " =~ \ (relay|duplex)\  ]]; then NEEDS_FANOUT=1; fi
prepare "$NEEDS_FANOUT"
make_workdir
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

measure_rps() {  # measure_rps TARGET ROUND: one wrk run; appends rps, p99, CPU/req to res/
    local t=$1 round=$2 addr=${ADDR[$1]} pid=${PROXY_PID[$1]:-} out="$WORK/logs/wrk-$1-$2.txt"
    local c0=0 c1=0 t0 t1 b0=0 b1=0
    if [[ $WARMUP != 0 ]]; then
        run_child /dev/null "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d "$WARMUP" "http://$addr/small" || true
    fi
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    ((${#PIN_PROXY[@]})) && b0=$(cpu_busy_ticks "$PROXY_CPU")
    t0=$(now_ns)
    if ! run_child "$out" "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d "$DURATION" "http://$addr/small"; then
        fail "$t" "wrk exited non-zero (see $out)"
        return 1
    fi
    t1=$(now_ns)
    ((${#PIN_PROXY[@]})) && b1=$(cpu_busy_ticks "$PROXY_CPU")
    if [[ -n $pid ]]; then
        kill -0 "$pid" 2>/dev/null || { fail "$t" "proxy process died"; return 1; }
        c1=$(cpu_ticks "$pid")
    fi
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
    echo "$rps" >>"$WORK/res/$t.rps"
    to_ms "$p99" >>"$WORK/res/$t.p99"
    if [[ -n $pid ]]; then
        awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.3f\n", d / hz * 1e6 / n }' \
            >>"$WORK/res/$t.cpu"
        awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f\n", d / hz / (ns / 1e9) * 100 }' \
            >>"$WORK/res/$t.cpupct"
    fi
    local others=""
    if ((${#PIN_PROXY[@]})); then
        # Busy time of the proxy's CPU not spent by the proxy: other work on the machine.
        others=$(awk -v d=$((b1 - b0 - (c1 - c0))) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) \
            'BEGIN { v = d / hz / (ns / 1e9) * 100; printf "%.0f\n", (v < 0 ? 0 : v > 100 ? 100 : v) }')
        echo "$others" >>"$WORK/res/$t.others"
        others=", others on cpu $PROXY_CPU: $others%"
    fi
    log "  $t round $round: $rps req/s, p99 $p99, $reqs requests$others"
}

measure_mbps() { # measure_mbps TARGET ROUND: LARGE_FETCHES downloads on one connection
    local t=$1 round=$2 addr=${ADDR[$1]} pid=${PROXY_PID[$1]:-} i urls=()
    local c0=0 c1=0 t0 t1 out="$WORK/logs/curl-$1-$2.txt"
    for ((i = 0; i < LARGE_FETCHES; i++)); do urls+=(-o /dev/null "http://$addr/large"); done
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    ((${#PIN_PROXY[@]})) && b0=$(cpu_busy_ticks "$PROXY_CPU")
    t0=$(now_ns)
    if ! run_child "$out" "${PIN_LOAD[@]}" curl -s --max-time 120 -w '%{http_code} %{size_download}\n' \
        "${urls[@]}"; then :; fi
    t1=$(now_ns)
    [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
    local good
    good=$(awk -v n="$LARGE_BYTES" '$1 == 200 && $2 == n { c++ } END { print c + 0 }' "$out")
    if ((good != LARGE_FETCHES)); then
        fail "$t" "only $good of $LARGE_FETCHES large downloads came back whole (see $out)"
        return 1
    fi
    awk -v b=$((LARGE_BYTES * LARGE_FETCHES)) -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f\n", b / 1e6 / (ns / 1e9) }' \
        >>"$WORK/res/$t.mbps"
    if [[ -n $pid ]]; then
        awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v b=$((LARGE_BYTES * LARGE_FETCHES)) \
            'BEGIN { printf "%.0f\n", d / hz * 1000 / (b / 1073741824) }' >>"$WORK/res/$t.cpugib"
    fi
    log "  $t round $round: $(tail -n1 "$WORK/res/$t.mbps") MB/s"
}

# ------------------------------------------------------------------------------------------- the run
if ((WAIT_QUIET > 0)); then wait_quiet "$WAIT_QUIET"; fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    log "note: load average is $LOAD_START before the run: other work on this machine makes the numbers noisy"
fi
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
declare -A M=()
for t in "${TARGET_LIST[@]}"; do
    for m in rps p99 cpu cpupct others mbps cpugib; do M[$t.$m]=$(median "$WORK/res/$t.$m"); done
done

fmt() {          # fmt VALUE DECIMALS: "-" for a missing value
    [[ $1 == nan || -z $1 ]] && { echo "-"; return; }
    awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'
}
ratio() {        # ratio A B: A/B as "0.93x"; "-" when either is missing
    [[ $1 == nan || $2 == nan || -z $1 || -z $2 ]] && { echo "-"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'
}
ref() { if [[ -n ${LABEL[$1]:-} && " ${TARGET_LIST[*]} " == *" $1 "* ]]; then echo "${M[$1.$2]}"; else echo nan; fi; }
per_round() {    # per_round A B METRIC: A/B of each round, as "1.02x 0.97x 1.10x"
    paste -d' ' "$WORK/res/$1.$3" "$WORK/res/$2.$3" | awk '{ printf "%s%.2fx", (NR > 1 ? " " : ""), $1 / $2 }'
}
verdict() {      # the one comparison fanout is built for: relay against HAProxy
    local rps cpu goal
    rps=$(ratio "${M[relay.rps]}" "${M[haproxy.rps]}")
    cpu=$(ratio "${M[relay.cpu]}" "${M[haproxy.cpu]}")
    goal="met"
    awk -v r="${rps%x}" -v c="${cpu%x}" 'BEGIN { exit !(r > 1 && c < 1) }' || goal="NOT met"
    echo "**fanout relay vs HAProxy: req/s $rps, CPU/req $cpu** (medians; per round: req/s" \
        "$(per_round relay haproxy rps), CPU/req $(per_round relay haproxy cpu))." \
        "Goal (req/s > 1x and CPU/req < 1x): $goal."
}

COMMIT=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO_DIR" diff --quiet HEAD -- 2>/dev/null || COMMIT+="+dirty"
REPORT="$WORK/report.md"
{
    echo "# fanout benchmark, $STARTED_AT"
    echo
    echo "- commit $COMMIT; $(haproxy -v 2>/dev/null | head -n1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
    echo "- $(nproc) cpus; load average $LOAD_START at start, $LOAD_END at end"
    echo "- wrk ${WRK_ARGS[*]} -d $DURATION (warm-up $WARMUP) on GET /small ($SMALL_BYTES-byte body)$([[ $NEW_CONN == 1 ]] && echo ", a new connection per request")"
    echo "- throughput: $LARGE_FETCHES x $LARGE_MIB MiB GET /large with curl over one connection"
    echo "- pinning: $PINNING; nice $NICE for every process of the benchmark"
    if [[ -n $HAPROXY_GLOBAL$HAPROXY_DEFAULTS ]]; then
        echo "- haproxy config beyond the defaults: global '$HAPROXY_GLOBAL', defaults '$HAPROXY_DEFAULTS'"
    fi
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
    echo "Ratios (req/s and MB/s: higher is better; p99 and CPU: lower is better)"
    echo
    echo "| target | req/s vs (a) | req/s vs (d) | p99 vs (a) | p99 vs (d) | CPU/req vs (d) | MB/s vs (a) | MB/s vs (d) | CPU/GiB vs (d) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for t in "${TARGET_LIST[@]}"; do
        failed "$t" && continue
        echo "| ${LABEL[$t]} | $(ratio "${M[$t.rps]}" "$(ref direct rps)") | $(ratio "${M[$t.rps]}" "$(ref haproxy rps)") | $(ratio "${M[$t.p99]}" "$(ref direct p99)") | $(ratio "${M[$t.p99]}" "$(ref haproxy p99)") | $(ratio "${M[$t.cpu]}" "$(ref haproxy cpu)") | $(ratio "${M[$t.mbps]}" "$(ref direct mbps)") | $(ratio "${M[$t.mbps]}" "$(ref haproxy mbps)") | $(ratio "${M[$t.cpugib]}" "$(ref haproxy cpugib)") |"
    done
    if [[ " ${TARGET_LIST[*]} " == *" relay "*" haproxy "* ]] && ! failed relay && ! failed haproxy; then
        echo
        verdict
    fi
} >"$REPORT"

echo
cat "$REPORT"
mkdir -p "$RESULTS_DIR"
cp "$REPORT" "$RESULTS_DIR/latest.md"
log "wrote $RESULTS_DIR/latest.md; raw wrk/curl output in $RESULTS_DIR/last-run/"

nfailed=0
for t in "${TARGET_LIST[@]}"; do failed "$t" && nfailed=$((nfailed + 1)); done
if ((nfailed > 0)); then
    log "$nfailed target(s) failed: the numbers above are not a valid comparison"
    exit 1
fi
