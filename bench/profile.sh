#!/usr/bin/env bash
# Where does a proxy's time go? For each proxy target, under the same wrk load as bench/run.sh:
#   1. syscalls per request, by syscall (perf's syscall tracepoints; strace -c -f if perf can't),
#   2. the hottest functions, user and kernel (perf record -e cpu-clock, flat profile),
#   3. a flame graph (perf record --call-graph dwarf, inferno: bench/results/flame-T.svg) and its
#      hottest whole stacks as text (BENCH_FLAME=0 skips it),
#   4. the syscalls of one request on a new connection, in order (strace),
# side by side for fanout and HAProxy. Writes bench/results/profile.md.
#
#   bench/profile.sh                      # relay and haproxy
#   BENCH_TARGETS=relay,duplex,haproxy,nginx-stream bench/profile.sh
#
# Knobs: BENCH_PROFILE_DURATION (5s) per measurement, BENCH_CONNECTIONS (64), BENCH_THREADS (1),
# BENCH_NEW_CONN (0; 1: a new connection per request),
# BENCH_TOP (25) functions shown, plus lib.sh's (BENCH_PIN, BENCH_FANOUT_BIN, ...).
set -euo pipefail

DURATION=${BENCH_PROFILE_DURATION:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
TARGETS=${BENCH_TARGETS:-relay,haproxy}
TOP=${BENCH_TOP:-25}
FLAME=${BENCH_FLAME:-1}
FLAME_TOP=${BENCH_FLAME_TOP:-12}
BENCH_LARGE_MIB=${BENCH_LARGE_MIB:-1}    # the large file is not used here

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

parse_targets "$TARGETS"
need nginx nginx
need wrk wrk
need curl curl
prepare
if ! command -v perf >/dev/null && ! command -v strace >/dev/null; then
    die "neither perf nor strace is installed (apt-get install linux-perf strace)"
fi
make_workdir
make_www
start_backends

WRK_ARGS=(-t "$THREADS" -c "$CONNECTIONS" -d "$DURATION") # a later -d overrides this one
if [[ ${BENCH_NEW_CONN:-0} == 1 ]]; then WRK_ARGS+=(-H "Connection: close"); fi

perf_works() { perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; }

wrk_requests() { # wrk_requests WRK_OUTPUT: the request count; dies if wrk served nothing
    local n
    n=$(awk '/ requests in / { print $1 }' "$1")
    [[ -n $n && $n -gt 0 ]] || die "wrk served no requests (see $1): $(tail -c 300 "$1")"
    echo "$n"
}

# Runs wrk against TARGET while TOOL... watches the proxy; stops TOOL with SIGINT after wrk ends.
# observe TARGET NAME TOOL...: the tool's output in $WORK/logs/NAME.tool, wrk's in NAME.wrk
observe() {
    local t=$1 name=$2 tool_pid i
    shift 2
    "$@" >"$WORK/logs/$name.tool" 2>&1 &
    tool_pid=$!
    PIDS+=("$tool_pid")
    sleep 0.5 # let perf/strace attach
    run_child "$WORK/logs/$name.wrk" "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" "http://${ADDR[$t]}/small"
    kill -INT "$tool_pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$tool_pid" 2>/dev/null || break
        sleep 0.1
    done
    wait "$tool_pid" 2>/dev/null || true
}

syscalls_per_request() { # syscalls_per_request TARGET: "name per-request" lines in res/T.sys
    local t=$1 pid=${PROXY_PID[$1]} n
    if perf_works; then
        observe "$t" "$t-sys" perf stat -x, -e raw_syscalls:sys_enter -e 'syscalls:sys_enter_*' \
            -p "$pid" -o "$WORK/logs/$t-sys.perf"
        n=$(wrk_requests "$WORK/logs/$t-sys.wrk")
        # perf -x, lines: count,unit,event,...
        awk -F, -v n="$n" '$3 ~ /sys_enter/ && $1 ~ /^[0-9]+$/ && $1 > 0 {
                name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "TOTAL"
                printf "%s %.3f\n", name, $1 / n }' "$WORK/logs/$t-sys.perf" >"$WORK/res/$t.sys"
    else
        observe "$t" "$t-sys" strace -c -f -p "$pid" -o "$WORK/logs/$t-sys.strace"
        n=$(wrk_requests "$WORK/logs/$t-sys.wrk")
        awk -v n="$n" '$1 ~ /^[0-9.]+$/ && NF >= 5 { name = $NF; calls = $4
                printf "%s %.3f\n", name, calls / n; total += calls }
            END { printf "TOTAL %.3f\n", total / n }' "$WORK/logs/$t-sys.strace" >"$WORK/res/$t.sys"
    fi
    log "  $t: $n requests while counting syscalls"
}

hot_functions() { # hot_functions TARGET: perf's flat profile into res/T.hot
    local t=$1 pid=${PROXY_PID[$1]}
    if ! perf_works; then
        echo "(perf unavailable; try valgrind --tool=callgrind on the proxy)" >"$WORK/res/$t.hot"
        return 0
    fi
    observe "$t" "$t-hot" perf record -e cpu-clock -F 1999 -p "$pid" -o "$WORK/logs/$t.perf.data"
    perf report -i "$WORK/logs/$t.perf.data" --no-children --sort dso,symbol --stdio \
        >"$WORK/logs/$t.perf.txt" 2>/dev/null || true
    awk '/^#/ || /^$/ { next } { p = $1; sub(/%/, "", p); if (/\[k\]/) k += p; else u += p }
        END { printf "kernel %.1f%%, user space %.1f%% of the samples\n", k, u }' \
        "$WORK/logs/$t.perf.txt" >"$WORK/res/$t.hot"
    awk -v top="$TOP" '/^#/ || /^$/ { next } { sub(/([ \t]+-)+[ \t]*$/, ""); print; if (++n == top) exit }' \
        "$WORK/logs/$t.perf.txt" >>"$WORK/res/$t.hot"
    log "  $t: $(wrk_requests "$WORK/logs/$t-hot.wrk") requests while sampling"
}

flame_graph() { # flame_graph TARGET: a call-graph profile as bench/results/flame-T.svg, hottest stacks into res/T.flame
    local t=$1 pid=${PROXY_PID[$1]}
    if [[ $FLAME != 1 ]] || ! perf_works; then
        return 0
    fi
    if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
        echo "(no flame graph: cargo install inferno)" >"$WORK/res/$t.flame"
        return 0
    fi
    # DWARF unwinding: a release build keeps no frame pointers, and the kernel's stacks come whole.
    observe "$t" "$t-flame" perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" \
        -o "$WORK/logs/$t.flame.data"
    perf script -i "$WORK/logs/$t.flame.data" 2>/dev/null | inferno-collapse-perf >"$WORK/logs/$t.folded"
    inferno-flamegraph --title "$t under wrk -c$CONNECTIONS (bench/profile.sh)" \
        <"$WORK/logs/$t.folded" >"$RESULTS_DIR/flame-$t.svg"
    # The hottest whole stacks, leaf last, as text for a note: share of samples, then the stack.
    # (sorted into a file first: `sort | head` would end sort with SIGPIPE under pipefail)
    # By the count, the last field (Rust frames hold spaces: `<T as Trait>::f`).
    awk '{ print $NF "\t" $0 }' "$WORK/logs/$t.folded" | sort -t$'\t' -k1,1 -n -r | cut -f2- \
        >"$WORK/logs/$t.folded.sorted"
    head -n "$FLAME_TOP" "$WORK/logs/$t.folded.sorted" | awk -v total="$(
        awk '{ s += $NF } END { print s }' "$WORK/logs/$t.folded")" '{
            n = $NF; $NF = ""; k = split($0, f, ";"); s = f[k]
            for (i = k - 1; i >= 1 && i > k - 8; i--) s = f[i] " > " s
            if (k > 8) s = "... > " s
            printf "%5.2f%%  %s\n", 100 * n / total, s }' >"$WORK/res/$t.flame"
    log "  $t: flame graph in $RESULTS_DIR/flame-$t.svg"
}

one_request_trace() { # one_request_trace TARGET: the proxy's syscalls for one request on a new connection
    local t=$1 pid=${PROXY_PID[$1]} tool_pid i
    if ! command -v strace >/dev/null; then
        echo "(strace not installed)" >"$WORK/res/$t.seq"
        return 0
    fi
    strace -f -p "$pid" -o "$WORK/logs/$t.seq.strace" 2>/dev/null &
    tool_pid=$!
    PIDS+=("$tool_pid")
    sleep 0.5
    run_child /dev/null curl -s --max-time 5 -H "Connection: close" -o /dev/null "http://${ADDR[$t]}/small" || true
    sleep 0.3
    kill -INT "$tool_pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$tool_pid" 2>/dev/null || break
        sleep 0.1
    done
    # Drop the pid column and the trailing wait that strace's detaching interrupts.
    sed -e 's/^[0-9]* *//' -e '/<detached \.\.\.>/d' -e '/^---/d' "$WORK/logs/$t.seq.strace" \
        | cut -c1-150 >"$WORK/res/$t.seq"
}

log "profiling: $TARGETS; wrk ${WRK_ARGS[*]}; pinning: $PINNING"
PROFILED=()
for t in "${TARGET_LIST[@]}"; do
    [[ $t == direct ]] && continue
    start_target "$t" || die "$START_ERROR"
    run_child /dev/null "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d 1s "http://${ADDR[$t]}/small" || true
    syscalls_per_request "$t"
    hot_functions "$t"
    mkdir -p "$RESULTS_DIR"
    flame_graph "$t"
    one_request_trace "$t"
    PROFILED+=("$t")
done

REPORT="$RESULTS_DIR/profile.md"
mkdir -p "$RESULTS_DIR"
{
    echo "# fanout profile, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo
    echo "- commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown); load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- wrk ${WRK_ARGS[*]} on GET /small ($SMALL_BYTES-byte body); pinning: $PINNING"
    echo
    echo "## Syscalls per request"
    echo
    printf '| syscall |'
    for t in "${PROFILED[@]}"; do printf ' %s |' "$t"; done
    echo
    printf '|---|'
    for t in "${PROFILED[@]}"; do printf -- '---:|'; done
    echo
    # Rows: every syscall seen by any target, TOTAL first, then by the first target's count.
    for t in "${PROFILED[@]}"; do awk '{ print $1 }' "$WORK/res/$t.sys"; done | sort -u >"$WORK/res/names"
    while read -r name; do
        printf '| %s |' "$name"
        for t in "${PROFILED[@]}"; do
            printf ' %s |' "$(awk -v s="$name" '$1 == s { print $2 }' "$WORK/res/$t.sys" | grep . || echo -)"
        done
        echo
    done < <(awk 'FNR == NR { v[$1] = $2; next } { print ($1 == "TOTAL" ? 1e9 : v[$1] + 0), $1 }' \
        "$WORK/res/${PROFILED[0]}.sys" "$WORK/res/names" | sort -gr | awk '{ print $2 }')
    for t in "${PROFILED[@]}"; do
        echo
        echo "## Hottest functions: $t (share of the proxy's CPU samples)"
        echo
        echo '```'
        cat "$WORK/res/$t.hot"
        echo '```'
    done
    for t in "${PROFILED[@]}"; do
        [[ -s $WORK/res/$t.flame ]] || continue
        echo
        echo "## Hottest call stacks: $t (share of samples; the innermost 8 frames, caller > callee; flame graph: results/flame-$t.svg)"
        echo
        echo '```'
        cat "$WORK/res/$t.flame"
        echo '```'
    done
    for t in "${PROFILED[@]}"; do
        echo
        echo "## One request on a new connection: $t's syscalls, in order (strace)"
        echo
        echo '```'
        cat "$WORK/res/$t.seq"
        echo '```'
    done
} >"$REPORT"
cat "$REPORT"
log "wrote $REPORT"
