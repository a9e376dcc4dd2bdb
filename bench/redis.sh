#!/usr/bin/env bash
# Pipelined Redis through each proxy, side by side: redis-benchmark -P 16 -c 50 against a
# redis-server of this script's own (no persistence), through direct (no proxy), fanout relay,
# fanout duplex (a second redis-server as the secondary), HAProxy and nginx stream. Reports
# requests/s, p99 latency and the proxy's CPU µs per request for each test (SET, GET), ratios
# against direct, HAProxy and nginx stream; medians of interleaved rounds. Writes
# bench/results/redis.md.
#
#   bench/redis.sh
#   BENCH_REDIS_REQUESTS=200000 BENCH_RUNS=1 bench/redis.sh      # a quick check
#   BENCH_TARGETS=relay,haproxy BENCH_REDIS_PIPELINE=64 bench/redis.sh
#
# Each test is its own redis-benchmark run (-t set, then -t get) so its CPU is its own. Every run
# is checked against the server: the origin's INFO commandstats must count exactly -n more calls of
# the command and no failed or rejected ones, and redis-benchmark must print no error.
# redis-server and redis-benchmark run on BENCH_LOAD_CPU (0), the proxies on BENCH_PROXY_CPU (1).
set -euo pipefail

REQUESTS=${BENCH_REDIS_REQUESTS:-1000000} # redis-benchmark -n, per test
PIPELINE=${BENCH_REDIS_PIPELINE:-16}      # -P
CLIENTS=${BENCH_REDIS_CLIENTS:-50}        # -c
TESTS=${BENCH_REDIS_TESTS:-set,get}       # -t, one run each
RUNS=${BENCH_RUNS:-3}
TARGETS=${BENCH_TARGETS:-direct,relay,duplex,haproxy,nginx-stream}
WAIT_QUIET=${BENCH_WAIT_QUIET:-0}
BENCH_LARGE_MIB=0

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IFS=, read -r -a TEST_LIST <<<"$TESTS"
for x in "${TEST_LIST[@]}"; do
    [[ $x =~ ^[a-z_0-9]+$ ]] || die "BENCH_REDIS_TESTS: '$x' is not a redis-benchmark test name"
done

keep_results() {
    mkdir -p "$RESULTS_DIR"
    rm -rf "$RESULTS_DIR/last-redis"
    cp -r "$WORK" "$RESULTS_DIR/last-redis"
}

parse_targets "$TARGETS"
need redis-server redis-server
need redis-benchmark redis-tools
need redis-cli redis-tools
prepare
make_workdir

start_redis() {  # start_redis NAME: sets REDIS_PORT; no persistence, no protected mode, loopback only
    pick_port REDIS_PORT
    mkdir -p "$WORK/$1"
    start "$1" "${PIN_LOAD[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
        --appendonly no --protected-mode no --daemonize no --dir "$WORK/$1" --logfile "" \
        --maxclients 10000
    wait_port "$REDIS_PORT" "$STARTED_PID" "$1"
    local i
    for ((i = 0; i < 50; i++)); do
        [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.1
    done
    die "$1 does not answer PING on port $REDIS_PORT"
}
start_redis redis-origin
ORIGIN_PORT=$REDIS_PORT
for t in "${TARGET_LIST[@]}"; do ORIGIN[$t]=127.0.0.1:$ORIGIN_PORT; done
SECONDARY_PORT=""
if has_target duplex; then
    start_redis redis-secondary
    SECONDARY_PORT=$REDIS_PORT
    SECONDARY=127.0.0.1:$SECONDARY_PORT
fi
for t in "${TARGET_LIST[@]}"; do
    start_target "$t" || fail "$t" "$START_ERROR"
done

calls() {        # calls PORT COMMAND: "calls failed+rejected" of COMMAND from INFO commandstats
    redis-cli -h 127.0.0.1 -p "$1" info commandstats | tr -d '\r' | awk -F'[:,=]' -v c="cmdstat_$2" '
        $1 == c { for (i = 2; i < NF; i += 2) v[$i] = $(i + 1) }
        END { print v["calls"] + 0, v["failed_calls"] + v["rejected_calls"] }'
}

measure() {      # measure TARGET TEST ROUND
    local t=$1 test=$2 round=$3 addr=${ADDR[$1]} out="$WORK/logs/redis-benchmark-$1-$2-$3.txt"
    local cmd=${2%%_*} rc=0 n0 e0 n1 e1 s0=0 s1=0
    read -r n0 e0 < <(calls "$ORIGIN_PORT" "$cmd")
    if [[ $t == duplex ]]; then read -r s0 _ < <(calls "$SECONDARY_PORT" "$cmd"); fi
    sample_begin "$t"
    run_child "$out" "${PIN_LOAD[@]}" timeout 600 redis-benchmark -h "${addr%:*}" -p "${addr##*:}" \
        -P "$PIPELINE" -t "$test" -n "$REQUESTS" -c "$CLIENTS" -q --csv || rc=$?
    sample_end "$t" || { fail "$t" "proxy process died"; return 1; }
    sleep 0.2 # duplex's secondary may finish a moment after the primary
    read -r n1 e1 < <(calls "$ORIGIN_PORT" "$cmd")
    if [[ $t == duplex ]]; then read -r s1 _ < <(calls "$SECONDARY_PORT" "$cmd"); fi
    local line rps p99
    line=$(grep -i "^\"$test\"," "$out" | tail -n1 || true)
    rps=$(awk -F'"' '{ print $4 }' <<<"$line")
    p99=$(awk -F'"' '{ print $14 }' <<<"$line")
    if ((rc != 0)) || [[ -z $rps || -z $p99 ]]; then
        fail "$t" "redis-benchmark $test exited $rc or printed no result (see $out): $(tail -c 200 "$out" | tr '\n' ' ')"
        return 1
    fi
    if grep -qiE 'error|ERR ' "$out"; then
        fail "$t" "redis-benchmark $test reported errors: $(grep -m1 -iE 'error|ERR ' "$out")"
        return 1
    fi
    if ((n1 - n0 != REQUESTS || e1 - e0 != 0)); then
        fail "$t" "$test: redis-server counted $((n1 - n0)) $cmd calls ($((e1 - e0)) failed/rejected) for $REQUESTS requests"
        return 1
    fi
    record "$t" "rps_$test" "$rps"
    record "$t" "p99_$test" "$p99"
    if [[ -n ${PROXY_PID[$t]:-} ]]; then
        record "$t" "cpu_$test" "$(awk -v d="$S_TICKS" -v hz="$CLK_TCK" -v n="$REQUESTS" 'BEGIN { printf "%.3f\n", d / hz * 1e6 / n }')"
        record "$t" "cpupct_$test" "$(sample_pct)"
    fi
    local note=""
    if [[ -n $S_OTHERS ]]; then
        record "$t" others "$S_OTHERS"
        note=", others on cpu $PROXY_CPU: $S_OTHERS%"
    fi
    if [[ $t == duplex ]]; then
        record "$t" secondary "$((s1 - s0))"
        note+=", the secondary served $((s1 - s0))"
    fi
    log "  $t $test round $round: $rps req/s, p99 $p99 ms$note"
}

begin_run
BENCH_CMD="redis-benchmark -P $PIPELINE -c $CLIENTS -n $REQUESTS -q --csv"
log "targets: $TARGETS; $BENCH_CMD -t {$TESTS}; $RUNS round(s); pinning: $PINNING"
for ((round = 1; round <= RUNS; round++)); do
    log "round $round of $RUNS"
    for t in "${TARGET_LIST[@]}"; do
        for x in "${TEST_LIST[@]}"; do
            failed "$t" || measure "$t" "$x" "$round" || true
        done
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

metrics=(others secondary)
for x in "${TEST_LIST[@]}"; do metrics+=("rps_$x" "p99_$x" "cpu_$x" "cpupct_$x"); done
medians "${metrics[@]}"

REPORT="$WORK/redis.md"
{
    echo "# fanout pipelined Redis benchmark, $STARTED_AT"
    echo
    echo "- $(redis-server --version | cut -d' ' -f1-3); $BENCH_CMD, one run per test (-t): ${TESTS//,/, }"
    run_header
    echo "- $RUNS round(s), targets round-robin; each number is the median over the rounds"
    echo "- command: $(env | grep '^BENCH_' | sort | tr '\n' ' ')bench/redis.sh"
    echo
    printf '| target |'
    for x in "${TEST_LIST[@]}"; do printf ' %s req/s | %s p99 ms | %s proxy CPU µs/req | %s proxy CPU %% |' "${x^^}" "${x^^}" "${x^^}" "${x^^}"; done
    printf ' others on proxy CPU %% |\n|---|'
    for x in "${TEST_LIST[@]}"; do printf -- '---:|---:|---:|---:|'; done
    printf -- '---:|\n'
    for t in "${TARGET_LIST[@]}"; do
        if failed "$t"; then
            echo "| ${LABEL[$t]} | FAILED: $(<"$WORK/res/$t.fail") |"
            continue
        fi
        printf '| %s |' "${LABEL[$t]}"
        for x in "${TEST_LIST[@]}"; do
            printf ' %s | %s | %s | %s |' "$(fmt "${M[$t.rps_$x]}" 0)" "$(fmt "${M[$t.p99_$x]}" 3)" \
                "$(fmt "${M[$t.cpu_$x]}" 3)" "$(fmt "${M[$t.cpupct_$x]}" 0)"
        done
        printf ' %s |\n' "$(fmt "${M[$t.others]}" 0)"
    done
    if usable duplex; then
        echo
        echo "duplex's secondary redis-server counted a median of $(fmt "${M[duplex.secondary]}" 0) calls per run (of $REQUESTS sent)."
    fi
    echo
    echo "Ratios: req/s higher is better; p99 and CPU lower is better."
    specs=()
    for x in "${TEST_LIST[@]}"; do specs+=("rps_$x:${x^^} req/s" "p99_$x:${x^^} p99"); done
    ratio_table direct "${specs[@]}"
    for x in "${TEST_LIST[@]}"; do specs+=("cpu_$x:${x^^} CPU/req"); done
    ratio_table haproxy "${specs[@]}"
    ratio_table nginx-stream "${specs[@]}"
} >"$REPORT"

publish_report redis.md "redis-benchmark's output in $RESULTS_DIR/last-redis/logs/" "the numbers above are not a valid comparison"
