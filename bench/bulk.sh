#!/usr/bin/env bash
# Bulk throughput through each proxy, side by side: iperf3 over one TCP connection (plus iperf3's
# control connection), client -> proxy -> iperf3 server, in both directions:
#   up    iperf3 -c PROXY -t N       the client sends, the server receives
#   down  iperf3 -c PROXY -t N -R    the server sends, the client receives
# through direct (no proxy), fanout relay, HAProxy (with and without splice-auto) and nginx stream.
# Reports Gbit/s (as iperf3's receiver counted it) and the proxy's CPU ms per MiB moved
# (utime+stime from /proc/PID/stat over the bytes iperf3 reports), ratios against direct, HAProxy
# and nginx stream; medians of interleaved rounds. Writes bench/results/bulk.md.
#
#   bench/bulk.sh
#   BENCH_DURATION=2 BENCH_RUNS=1 bench/bulk.sh                  # a quick check
#   BENCH_TARGETS=relay,relay-copy,haproxy,haproxy-splice bench/bulk.sh
#   BENCH_IPERF_ARGS="-P 4" bench/bulk.sh                         # 4 parallel streams
#
# iperf3 (client and servers) runs on BENCH_LOAD_CPU (0), the proxies on BENCH_PROXY_CPU (1).
set -euo pipefail

DURATION=${BENCH_DURATION:-10}           # iperf3 -t, seconds (a trailing "s" is allowed)
DURATION=${DURATION%s}
RUNS=${BENCH_RUNS:-3}
TARGETS=${BENCH_TARGETS:-direct,relay,haproxy,haproxy-splice,nginx-stream}
DIRECTIONS=${BENCH_BULK_DIRECTIONS:-up,down}
IPERF_ARGS=${BENCH_IPERF_ARGS:-}         # extra iperf3 client arguments, e.g. "-P 4", "-Z", "-l 1M"
WAIT_QUIET=${BENCH_WAIT_QUIET:-0}
BENCH_LARGE_MIB=0                        # run.sh's download file: not used here

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION == 0)); then
    die "BENCH_DURATION must be whole seconds (got '$DURATION')"
fi
IFS=, read -r -a DIRECTION_LIST <<<"$DIRECTIONS"
for d in "${DIRECTION_LIST[@]}"; do
    [[ $d == up || $d == down ]] || die "BENCH_BULK_DIRECTIONS: '$d' is neither up nor down"
done
read -r -a IPERF_EXTRA <<<"$IPERF_ARGS"

keep_results() {
    mkdir -p "$RESULTS_DIR"
    rm -rf "$RESULTS_DIR/last-bulk"
    cp -r "$WORK" "$RESULTS_DIR/last-bulk"
}

parse_targets "$TARGETS"
need iperf3 iperf3
need python3 python3
prepare
make_workdir

# The origin: one iperf3 server per target (a test that breaks halfway leaves only its own server
# in a bad state), and one more as duplex's secondary.
start_iperf_server() { # start_iperf_server NAME: sets IPERF_PORT
    pick_port IPERF_PORT
    start "$1" "${PIN_LOAD[@]}" iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
    wait_port "$IPERF_PORT" "$STARTED_PID" "$1"
}
for t in "${TARGET_LIST[@]}"; do
    start_iperf_server "iperf3-server-$t"
    ORIGIN[$t]=127.0.0.1:$IPERF_PORT
done
if has_target duplex; then
    start_iperf_server iperf3-secondary
    SECONDARY=127.0.0.1:$IPERF_PORT
fi
for t in "${TARGET_LIST[@]}"; do
    start_target "$t" || fail "$t" "$START_ERROR"
done

# iperf3's JSON -> "received_bytes sent_bytes bits_per_second error"
read_iperf_json() {
    python3 - "$1" <<'EOF'
import json, sys
try:
    with open(sys.argv[1]) as f:
        j = json.load(f)
except Exception as e:  # noqa: BLE001 (anything unreadable is a failed run)
    print(0, 0, 0, f"unreadable JSON: {e}".replace(" ", "_"))
    sys.exit(0)
err = j.get("error", "")
end = j.get("end", {})
rx = end.get("sum_received", {})
tx = end.get("sum_sent", {})
print(int(rx.get("bytes", 0)), int(tx.get("bytes", 0)), float(rx.get("bits_per_second", 0)),
      (err or "-").replace(" ", "_"))
EOF
}

measure() {      # measure TARGET DIRECTION ROUND
    local t=$1 dir=$2 round=$3 addr=${ADDR[$1]} out="$WORK/logs/iperf3-$1-$2-$3.json" args=()
    [[ $dir == down ]] && args+=(-R)
    sample_begin "$t"
    local rc=0
    run_child "$out" "${PIN_LOAD[@]}" timeout $((DURATION + 30)) \
        iperf3 -c "${addr%:*}" -p "${addr##*:}" -t "$DURATION" -J "${args[@]}" "${IPERF_EXTRA[@]}" || rc=$?
    sample_end "$t" || { fail "$t" "proxy process died"; return 1; }
    local rx tx bps err
    read -r rx tx bps err < <(read_iperf_json "$out")
    if ((rc != 0)) || [[ $err != - ]] || ((rx == 0)); then
        fail "$t" "iperf3 $dir failed (exit $rc, ${err//_/ }; see $out)"
        return 1
    fi
    # What the receiver counted against what the sender sent: a proxy may hold some in flight at
    # the end, never lose a noticeable part of it.
    if ((rx * 100 < tx * 95)); then
        fail "$t" "iperf3 $dir: the receiver got $rx of $tx bytes sent"
        return 1
    fi
    record "$t" "gbps_$dir" "$(awk -v b="$bps" 'BEGIN { printf "%.3f\n", b / 1e9 }')"
    if [[ -n ${PROXY_PID[$t]:-} ]]; then
        record "$t" "cpumib_$dir" "$(awk -v d="$S_TICKS" -v hz="$CLK_TCK" -v b="$rx" \
            'BEGIN { printf "%.4f\n", d / hz * 1000 / (b / 1048576) }')"
        record "$t" "cpupct_$dir" "$(sample_pct)"
    fi
    local others=""
    if [[ -n $S_OTHERS ]]; then
        record "$t" "others_$dir" "$S_OTHERS"
        others=", others on cpu $PROXY_CPU: $S_OTHERS%"
    fi
    log "  $t $dir round $round: $(tail -n1 "$WORK/res/$t.gbps_$dir") Gbit/s, $((rx / 1048576)) MiB$others"
}

begin_run
log "targets: $TARGETS; iperf3 -t $DURATION ${IPERF_ARGS:+$IPERF_ARGS }($DIRECTIONS); $RUNS round(s); pinning: $PINNING"
for ((round = 1; round <= RUNS; round++)); do
    log "round $round of $RUNS"
    for t in "${TARGET_LIST[@]}"; do
        for d in "${DIRECTION_LIST[@]}"; do
            failed "$t" || measure "$t" "$d" "$round" || true
        done
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

metrics=()
for d in "${DIRECTION_LIST[@]}"; do metrics+=("gbps_$d" "cpumib_$d" "cpupct_$d" "others_$d"); done
medians "${metrics[@]}"

REPORT="$WORK/bulk.md"
{
    echo "# fanout bulk benchmark (iperf3), $STARTED_AT"
    echo
    echo "- $(iperf3 --version | head -n1 | cut -d' ' -f1-2) -c PROXY -t $DURATION ${IPERF_ARGS:+$IPERF_ARGS }-J; up: the client sends; down: -R, the server sends"
    run_header
    echo "- $RUNS round(s), targets round-robin; each number is the median over the rounds"
    echo "- command: $(env | grep '^BENCH_' | sort | tr '\n' ' ')bench/bulk.sh"
    echo
    printf '| target |'
    for d in "${DIRECTION_LIST[@]}"; do printf ' %s Gbit/s | %s proxy CPU ms/MiB | %s proxy CPU %% | %s others on proxy CPU %% |' "$d" "$d" "$d" "$d"; done
    printf '\n|---|'
    for d in "${DIRECTION_LIST[@]}"; do printf -- '---:|---:|---:|---:|'; done
    echo
    for t in "${TARGET_LIST[@]}"; do
        if failed "$t"; then
            echo "| ${LABEL[$t]} | FAILED: $(<"$WORK/res/$t.fail") |"
            continue
        fi
        printf '| %s |' "${LABEL[$t]}"
        for d in "${DIRECTION_LIST[@]}"; do
            printf ' %s | %s | %s | %s |' "$(fmt "${M[$t.gbps_$d]}" 2)" "$(fmt "${M[$t.cpumib_$d]}" 3)" \
                "$(fmt "${M[$t.cpupct_$d]}" 0)" "$(fmt "${M[$t.others_$d]}" 0)"
        done
        echo
    done
    echo
    echo "Ratios: Gbit/s higher is better, CPU/MiB lower is better."
    specs=()
    for d in "${DIRECTION_LIST[@]}"; do specs+=("gbps_$d:$d Gbit/s"); done
    ratio_table direct "${specs[@]}"
    for d in "${DIRECTION_LIST[@]}"; do specs+=("cpumib_$d:$d CPU/MiB"); done
    ratio_table haproxy "${specs[@]}"
    ratio_table nginx-stream "${specs[@]}"
} >"$REPORT"

publish_report bulk.md "iperf3's JSON in $RESULTS_DIR/last-bulk/logs/" "the numbers above are not a valid comparison"
