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
SMALL_BYTES=${BENCH_SMALL_BYTES:-64}     # body of the request/s test
LARGE_MIB=${BENCH_LARGE_MIB:-1024}       # size of the throughput file
LARGE_FETCHES=${BENCH_LARGE_FETCHES:-1}  # downloads of it per target per round (one keep-alive connection)
NEW_CONN=${BENCH_NEW_CONN:-0}            # 1: "Connection: close", a new TCP connection per request
PIN=${BENCH_PIN:-1}                      # 1: proxies on PROXY_CPU, nginx+wrk+curl on LOAD_CPU
PROXY_CPU=${BENCH_PROXY_CPU:-1}
LOAD_CPU=${BENCH_LOAD_CPU:-0}
FANOUT_BIN=${BENCH_FANOUT_BIN:-}         # use this binary instead of building target/release/fanout
INSTALL=${BENCH_INSTALL:-1}              # 0: never run apt-get

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
RESULTS_DIR="$BENCH_DIR/results"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------ process cleanup
PIDS=()          # every long-running process we started, in start order
CHILD=""         # the wrk or curl being waited for
WORK=""          # the temp dir (holds configs, logs and the large file)

stop_pid() {     # stop_pid PID: TERM, then KILL after ~3s; also its direct children (nginx workers)
    local pid=$1 child i
    kill -0 "$pid" 2>/dev/null || return 0
    local children
    children=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for child in $children; do kill -KILL "$child" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    [[ -n $CHILD ]] && stop_pid "$CHILD"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if [[ -n $WORK && -d $WORK ]]; then
        rm -f "$WORK/www/large"
        mkdir -p "$RESULTS_DIR"
        rm -rf "$RESULTS_DIR/last-run"
        cp -r "$WORK" "$RESULTS_DIR/last-run" 2>/dev/null || true
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# wrk catches SIGINT and exits 0, and bash then skips its own INT trap while that was the foreground
# command ("wait and cooperative exit"). Waiting on a background child instead lets the trap run at
# once, so Ctrl-C stops the whole run, not just the current measurement.
run_child() {    # run_child OUTFILE CMD...: run CMD to its end, stdout+stderr to OUTFILE; its exit status
    local out=$1
    shift
    "$@" >"$out" 2>&1 &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

# ---------------------------------------------------------------------------------------- prerequisites
install_missing() {
    local missing=() sudo=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v ps >/dev/null || missing+=(procps)
    ((${#missing[@]} == 0)) && return 0
    [[ $INSTALL == 1 ]] || die "missing: ${missing[*]} (BENCH_INSTALL=0 forbids apt-get)"
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "missing: ${missing[*]}; run as root or install them"
        sudo=(sudo)
    fi
    log "installing ${missing[*]}"
    # Only refresh the package lists when apt cannot find a candidate for what we need.
    if ! apt-cache policy "${missing[@]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        "${sudo[@]}" apt-get update -q
    fi
    # policy-rc.d-less machines would start the packaged nginx on :80; we never use that one.
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2
}
install_missing
export PATH="$PATH:/usr/sbin:/sbin"

if [[ -z $FANOUT_BIN && $TARGETS =~ relay|duplex ]]; then
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) or set BENCH_FANOUT_BIN"
    log "building fanout (cargo build --release -p fanout-io)"
    (cd "$REPO_DIR" && cargo build --release -q -p fanout-io) || die "cargo build failed"
    FANOUT_BIN="$REPO_DIR/target/release/fanout"
fi
[[ -z $FANOUT_BIN || -x $FANOUT_BIN ]] || die "no fanout binary at $FANOUT_BIN"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)
# HAProxy refuses to start when maxconn needs more descriptors than the limit allows.
HAPROXY_MAXCONN=$(( ($(ulimit -n) - 100) / 2 ))
((HAPROXY_MAXCONN > 10000)) && HAPROXY_MAXCONN=10000

PIN_PROXY=()
PIN_LOAD=()
if [[ $PIN == 1 ]] && (($(nproc) >= 2)); then
    PIN_PROXY=(taskset -c "$PROXY_CPU")
    PIN_LOAD=(taskset -c "$LOAD_CPU")
    PINNING="proxy on cpu $PROXY_CPU; nginx, wrk and curl on cpu $LOAD_CPU"
else
    PINNING="none (BENCH_PIN=$PIN, $(nproc) cpus)"
fi

# ------------------------------------------------------------------------------------------- helpers
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fanout-bench.XXXXXX")
chmod 755 "$WORK" # nginx workers may run as nobody
mkdir -p "$WORK/www" "$WORK/res" "$WORK/logs" "$WORK/nginx-tmp"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

USED_PORTS=" "
pick_port() {    # a free loopback port, distinct from the ones picked before
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 40000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        port_in_use "$p" && continue
        USED_PORTS+="$p "
        echo "$p"
        return 0
    done
    die "found no free port"
}

wait_port() {    # wait_port PORT PID NAME: until PORT accepts, or PID died, or 10s passed
    local port=$1 pid=$2 name=$3 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at startup (see $WORK/logs/$name.err)"
        port_in_use "$port" && return 0
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port within 10s"
}

cpu_ticks() {    # utime+stime of a whole process (all threads), in clock ticks
    local stat
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) }                       # drop "pid (comm) ": comm may hold spaces
    awk '{ print $12 + $13 }' <<<"$stat"    # fields 14 and 15 of the full line
}

now_ns() { date +%s%N; }

median() {       # median of the numbers in a file, one a line; "nan" when empty
    [[ -s $1 ]] || { echo nan; return 0; }
    sort -g "$1" | awk '{ v[NR] = $1 }
        END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
              else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

to_ms() {        # wrk latency ("812.00us", "1.25ms", "2.01s", "1.00m") -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f\n", n }'
}

# ------------------------------------------------------------------------------------------ servers
NGINX_PORT=$(pick_port)       # primary backend
NGINX_PORT2=$(pick_port)      # the duplex secondary: same nginx, another port
HAPROXY_PORT=$(pick_port)

head -c "$SMALL_BYTES" /dev/zero | tr '\0' 'x' >"$WORK/www/small"
log "writing a ${LARGE_MIB} MiB file"
# Random bytes, but only 1 MiB of them drawn (repeated): /dev/urandom alone takes seconds per GiB.
head -c 1048576 /dev/urandom >"$WORK/block"
for ((i = 0; i < 32; i++)); do cat "$WORK/block"; done >"$WORK/block32"
for ((i = 0; i < (LARGE_MIB + 31) / 32; i++)); do cat "$WORK/block32"; done >"$WORK/www/large"
truncate -s "$((LARGE_MIB * 1048576))" "$WORK/www/large"
rm -f "$WORK/block" "$WORK/block32"
chmod 644 "$WORK/www/small" "$WORK/www/large"
LARGE_BYTES=$(stat -c %s "$WORK/www/large")

cat >"$WORK/nginx.conf" <<EOF
# generated by bench/run.sh: one worker, no logging, keep-alive kept for the whole run
daemon off;
master_process on;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/logs/nginx-error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/nginx-tmp/body;
    proxy_temp_path $WORK/nginx-tmp/proxy;
    fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
    scgi_temp_path $WORK/nginx-tmp/scgi;
    server { listen 127.0.0.1:$NGINX_PORT;  root $WORK/www; }
    server { listen 127.0.0.1:$NGINX_PORT2; root $WORK/www; }
}
EOF

cat >"$WORK/haproxy.cfg" <<EOF
# generated by bench/run.sh: plain TCP relay, one thread, no logging
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend nginx
backend nginx
    server nginx 127.0.0.1:$NGINX_PORT
EOF

start() {        # start NAME CMD...: run CMD in the background, logs in $WORK/logs; sets STARTED_PID
    local name=$1
    shift
    "$@" >"$WORK/logs/$name.out" 2>"$WORK/logs/$name.err" </dev/null &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

start_fanout() { # start_fanout NAME ARGS...: sets FANOUT_ADDR from its "listening on" line
    local name=$1 i line
    shift
    start "$name" "${PIN_PROXY[@]}" "$FANOUT_BIN" "$@"
    for ((i = 0; i < 100; i++)); do
        line=$(grep -m1 '^listening on ' "$WORK/logs/$name.out" 2>/dev/null || true)
        [[ -n $line ]] && break
        kill -0 "$STARTED_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    [[ -n $line ]] || return 1
    FANOUT_ADDR=${line#listening on }
}

declare -A ADDR=() PROXY_PID=() LABEL=()
LABEL[direct]="(a) direct, no proxy"
LABEL[relay]="(b) fanout relay"
LABEL[duplex]="(c) fanout duplex, 1 secondary"
LABEL[haproxy]="(d) haproxy mode tcp, nbthread 1"

fail() {         # fail TARGET REASON: the target is out of the remaining rounds; the run exits 1
    log "FAILED $1: $2"
    echo "$2" >"$WORK/res/$1.fail"
}
failed() { [[ -e $WORK/res/$1.fail ]]; }

IFS=, read -r -a TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
    [[ -n ${LABEL[$t]:-} ]] || die "unknown target '$t' in BENCH_TARGETS (direct,relay,duplex,haproxy)"
done

start nginx "${PIN_LOAD[@]}" nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/logs/nginx-error.log"
wait_port "$NGINX_PORT" "$STARTED_PID" nginx
wait_port "$NGINX_PORT2" "$STARTED_PID" nginx
ADDR[direct]=127.0.0.1:$NGINX_PORT

for t in "${TARGET_LIST[@]}"; do
    case $t in
    relay | duplex)
        if [[ $t == relay ]]; then
            args=(relay --listen 127.0.0.1:0 --to "127.0.0.1:$NGINX_PORT")
        else
            args=(duplex --listen 127.0.0.1:0 --primary "127.0.0.1:$NGINX_PORT"
                --secondary "127.0.0.1:$NGINX_PORT2")
        fi
        if start_fanout "fanout-$t" "${args[@]}"; then
            ADDR[$t]=$FANOUT_ADDR
            PROXY_PID[$t]=$STARTED_PID
        else
            fail "$t" "fanout $t did not start: $(tail -c 300 "$WORK/logs/fanout-$t.err" | tr '\n' ' ')"
        fi
        ;;
    haproxy)
        start haproxy "${PIN_PROXY[@]}" haproxy -db -f "$WORK/haproxy.cfg"
        wait_port "$HAPROXY_PORT" "$STARTED_PID" haproxy
        ADDR[$t]=127.0.0.1:$HAPROXY_PORT
        PROXY_PID[$t]=$STARTED_PID
        ;;
    esac
done

# --------------------------------------------------------------------------------------- measuring
WRK_ARGS=(-t "$THREADS" -c "$CONNECTIONS" --latency)
[[ $NEW_CONN == 1 ]] && WRK_ARGS+=(-H "Connection: close")

check_target() { # one small and one ranged large request must come back whole and exact
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
    local c0=0 c1=0 t0 t1
    if [[ $WARMUP != 0 ]]; then
        run_child /dev/null "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d "$WARMUP" "http://$addr/small" || true
    fi
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    t0=$(now_ns)
    if ! run_child "$out" "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d "$DURATION" "http://$addr/small"; then
        fail "$t" "wrk exited non-zero (see $out)"
        return 1
    fi
    t1=$(now_ns)
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
    log "  $t round $round: $rps req/s, p99 $p99, $reqs requests"
}

measure_mbps() { # measure_mbps TARGET ROUND: LARGE_FETCHES downloads on one connection
    local t=$1 round=$2 addr=${ADDR[$1]} pid=${PROXY_PID[$1]:-} i urls=()
    local c0=0 c1=0 t0 t1 out="$WORK/logs/curl-$1-$2.txt"
    for ((i = 0; i < LARGE_FETCHES; i++)); do urls+=(-o /dev/null "http://$addr/large"); done
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
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
    for m in rps p99 cpu cpupct mbps cpugib; do M[$t.$m]=$(median "$WORK/res/$t.$m"); done
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
    echo "- pinning: $PINNING"
    echo "- $RUNS round(s), targets round-robin; each number is the median over the rounds"
    echo
    echo "| target | req/s | p99 ms | proxy CPU µs/req | proxy CPU % | MB/s | proxy CPU ms/GiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for t in "${TARGET_LIST[@]}"; do
        if failed "$t"; then
            echo "| ${LABEL[$t]} | FAILED: $(<"$WORK/res/$t.fail") ||||||"
            continue
        fi
        echo "| ${LABEL[$t]} | $(fmt "${M[$t.rps]}" 0) | $(fmt "${M[$t.p99]}" 3) | $(fmt "${M[$t.cpu]}" 2) | $(fmt "${M[$t.cpupct]}" 0) | $(fmt "${M[$t.mbps]}" 0) | $(fmt "${M[$t.cpugib]}" 0) |"
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
