# shellcheck shell=bash disable=SC2034 # (variables here are for the scripts that source this file)
# Shared by bench/run.sh and bench/profile.sh: prerequisites, the processes under test, cleanup.
#
# The sourcing script sets (or leaves to their defaults) the BENCH_* variables below, sources this
# file, then calls, in order:
#   prepare          install what is missing, build fanout, raise limits, decide the pinning
#   make_workdir     temp dir with /small, /large, nginx.conf and haproxy.cfg
#   start_backends   nginx, on one port per target (BACKEND[T]) and one for the duplex secondary
#   start_target T   for T in direct|relay|duplex|haproxy: sets ADDR[T] and, for proxies, PROXY_PID[T]
# Everything started is stopped by the EXIT trap this file installs; the sourcing script may define
# keep_results (called with WORK still there, before it is removed).

SMALL_BYTES=${BENCH_SMALL_BYTES:-64}     # body of GET /small
LARGE_MIB=${BENCH_LARGE_MIB:-1024}       # size of GET /large
PIN=${BENCH_PIN:-1}                      # 1: proxies on PROXY_CPU, nginx+wrk+curl on LOAD_CPU
PROXY_CPU=${BENCH_PROXY_CPU:-1}
LOAD_CPU=${BENCH_LOAD_CPU:-0}
FANOUT_BIN=${BENCH_FANOUT_BIN:-}         # use this binary instead of building target/release/fanout
INSTALL=${BENCH_INSTALL:-1}              # 0: never run apt-get
HAPROXY_GLOBAL=${BENCH_HAPROXY_GLOBAL:-} # extra lines for haproxy's global section, ';'-separated
HAPROXY_DEFAULTS=${BENCH_HAPROXY_DEFAULTS:-} # ... and for its defaults section
NICE=${BENCH_NICE:-0}                    # e.g. -10: the benchmark's processes get the CPU before others'

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
RESULTS_DIR="$BENCH_DIR/results"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

declare -A ADDR=() PROXY_PID=() LABEL=() BACKEND=()
LABEL[direct]="(a) direct, no proxy"
LABEL[relay]="(b) fanout relay"
LABEL[duplex]="(c) fanout duplex, 1 secondary"
LABEL[haproxy]="(d) haproxy mode tcp, nbthread 1"

# ----------------------------------------------------------------------------------- processes, cleanup
PIDS=()          # every long-running process we started, in start order
CHILD=""         # the wrk, curl or strace being waited for
WORK=""          # the temp dir (configs, logs, the served files)

stop_pid() {     # stop_pid PID: TERM, then KILL after ~3s; also its direct children (nginx workers)
    local pid=$1 child children i
    kill -0 "$pid" 2>/dev/null || return 0
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
    if [[ -n $CHILD ]]; then stop_pid "$CHILD"; fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if [[ -n $WORK && -d $WORK ]]; then
        rm -f "$WORK/www/large"
        if declare -F keep_results >/dev/null; then keep_results || true; fi
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
    local out=$1 rc=0
    shift
    "$@" >"$out" 2>&1 &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

start() {        # start NAME CMD...: run CMD in the background, logs in $WORK/logs; sets STARTED_PID
    local name=$1
    shift
    "$@" >"$WORK/logs/$name.out" 2>"$WORK/logs/$name.err" </dev/null &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

# -------------------------------------------------------------------------------------- prerequisites
install_missing() {
    local missing=() sudo=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
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
    # Refresh the package lists only when apt has no candidate for something we need.
    local known
    known=$(apt-cache policy "${missing[@]}" 2>/dev/null | grep -c 'Candidate: [0-9]' || true)
    if ((known < ${#missing[@]})); then
        "${sudo[@]}" apt-get update -q >&2
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2
}

build_fanout() { # sets FANOUT_BIN, building target/release/fanout unless BENCH_FANOUT_BIN named one
    if [[ -z $FANOUT_BIN ]]; then
        command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) or set BENCH_FANOUT_BIN"
        log "building fanout (cargo build --release -p fanout-io)"
        (cd "$REPO_DIR" && cargo build --release -q -p fanout-io) || die "cargo build failed"
        FANOUT_BIN="$REPO_DIR/target/release/fanout"
    fi
    [[ -x $FANOUT_BIN ]] || die "no fanout binary at $FANOUT_BIN"
}

prepare() {      # prepare NEEDS_FANOUT(0|1)
    export PATH="$PATH:/usr/sbin:/sbin"
    install_missing
    if [[ $1 == 1 ]]; then build_fanout; fi
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    CLK_TCK=$(getconf CLK_TCK)
    # HAProxy refuses to start when maxconn needs more descriptors than the limit allows
    # (2 sockets per connection, and 2 pipe ends more with splicing).
    HAPROXY_MAXCONN=$((($(ulimit -n) - 100) / 4))
    if ((HAPROXY_MAXCONN > 10000)); then HAPROXY_MAXCONN=10000; fi
    if [[ $NICE != 0 ]]; then
        # Everything started from here on (nginx, proxies, wrk, curl) inherits this, alike for all.
        renice -n "$NICE" -p $$ >/dev/null || die "renice -n $NICE failed (negative values need root)"
    fi
    PIN_PROXY=()
    PIN_LOAD=()
    if [[ $PIN == 1 ]] && (($(nproc) >= 2)); then
        PIN_PROXY=(taskset -c "$PROXY_CPU")
        PIN_LOAD=(taskset -c "$LOAD_CPU")
        PINNING="proxy on cpu $PROXY_CPU; nginx, wrk and curl on cpu $LOAD_CPU"
    else
        PINNING="none (BENCH_PIN=$PIN, $(nproc) cpus)"
    fi
}

# -------------------------------------------------------------------------------------------- helpers
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_taken() {   # port_taken PORT: some TCP socket (listening, connected or in TIME-WAIT) has it
    local hex
    hex=$(printf '%04X' "$1")
    port_in_use "$1" && return 0
    awk -v h=":$hex" 'substr($2, length($2) - 4) == h { found = 1; exit } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

USED_PORTS=" "
pick_port() {    # pick_port VAR: a free loopback port into VAR, distinct from the ones picked before
    # Below the kernel's ephemeral range, so no outgoing connection of the run can hold it.
    local p i low=32768 span
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    span=$((low - 10000))
    ((span >= 1000)) || span=20000
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + RANDOM % span))
        [[ $USED_PORTS == *" $p "* ]] && continue
        port_taken "$p" && continue
        USED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "found no free port"
}

wait_port() {    # wait_port PORT PID NAME: until PORT accepts, or PID died, or 10s passed
    local port=$1 pid=$2 name=$3 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at startup: $(tail -c 400 "$WORK/logs/$name.err")"
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

cpu_busy_ticks() { # cpu_busy_ticks N: ticks CPU N spent busy since boot (all but idle and iowait)
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

now_ns() { date +%s%N; }

busy_pct() {     # busy_pct: how busy all CPUs together were over the next second, in percent
    local a b
    a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 1
    b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
        busy = y[1] - x[1]; all = busy + y[2] - x[2]; printf "%.0f\n", all ? busy * 100 / all : 0 }'
}

wait_quiet() {   # wait_quiet SECONDS: until the machine is under 10% busy, for SECONDS at most
    local limit=$1 i pct
    for ((i = 0; i < limit; i += 1)); do
        pct=$(busy_pct)
        ((pct < 10)) && { log "machine quiet ($pct% busy)"; return 0; }
        ((i % 60 == 0)) && log "waiting for a quiet machine: $pct% busy"
    done
    log "machine still busy after ${limit}s; measuring anyway (numbers will be noisy)"
}

# ------------------------------------------------------------------------------- files and configs
make_workdir() {
    local i
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/fanout-bench.XXXXXX")
    chmod 755 "$WORK" # nginx workers run as nobody
    mkdir -p "$WORK/www" "$WORK/res" "$WORK/logs" "$WORK/nginx-tmp"
    # Each target reaches nginx on a port of its own: with a new connection per request, the
    # TIME-WAIT sockets one target leaves behind then never collide with the next target's
    # connections (same 4-tuple), so no target pays for the one measured before it.
    local t port
    for t in direct relay duplex haproxy; do
        pick_port port
        BACKEND[$t]=$port
    done
    pick_port SECONDARY_PORT  # the duplex secondary: same nginx, another port
    pick_port HAPROXY_PORT

    head -c "$SMALL_BYTES" /dev/zero | tr '\0' 'x' >"$WORK/www/small"
    log "writing a $LARGE_MIB MiB file"
    # Random bytes, but only 1 MiB of them drawn (repeated): /dev/urandom alone takes seconds per GiB.
    head -c 1048576 /dev/urandom >"$WORK/block"
    for ((i = 0; i < 32; i++)); do cat "$WORK/block"; done >"$WORK/block32"
    for ((i = 0; i < (LARGE_MIB + 31) / 32; i++)); do cat "$WORK/block32"; done >"$WORK/www/large"
    truncate -s "$((LARGE_MIB * 1048576))" "$WORK/www/large"
    rm -f "$WORK/block" "$WORK/block32"
    chmod 644 "$WORK/www/small" "$WORK/www/large"
    LARGE_BYTES=$(stat -c %s "$WORK/www/large")

    cat >"$WORK/nginx.conf" <<EOF
# generated by bench/lib.sh: one worker, no logging, keep-alive kept for the whole run
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
    server { listen 127.0.0.1:${BACKEND[direct]};  root $WORK/www; }
    server { listen 127.0.0.1:${BACKEND[relay]};   root $WORK/www; }
    server { listen 127.0.0.1:${BACKEND[duplex]};  root $WORK/www; }
    server { listen 127.0.0.1:${BACKEND[haproxy]}; root $WORK/www; }
    server { listen 127.0.0.1:$SECONDARY_PORT;     root $WORK/www; }
}
EOF

    cat >"$WORK/haproxy.cfg" <<EOF
# generated by bench/lib.sh: plain TCP relay, one thread, no logging
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
$(tr ';' '\n' <<<"$HAPROXY_GLOBAL" | sed 's/^ */    /')
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
$(tr ';' '\n' <<<"$HAPROXY_DEFAULTS" | sed 's/^ */    /')
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend nginx
backend nginx
    server nginx 127.0.0.1:${BACKEND[haproxy]}
EOF
}

# ------------------------------------------------------------------------------------------- targets
start_backends() {
    start nginx "${PIN_LOAD[@]}" nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/logs/nginx-error.log"
    local port
    for port in "${BACKEND[@]}" "$SECONDARY_PORT"; do wait_port "$port" "$STARTED_PID" nginx; done
}

start_fanout() { # start_fanout NAME ARGS...: sets FANOUT_ADDR from its "listening on" line
    local name=$1 i line=""
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

start_target() { # start_target T: 1 (with a message in START_ERROR) if it did not come up
    local t=$1
    START_ERROR=""
    case $t in
    direct)
        ADDR[$t]=127.0.0.1:${BACKEND[direct]}
        ;;
    relay | duplex)
        local args=(relay --listen 127.0.0.1:0 --to "127.0.0.1:${BACKEND[relay]}")
        if [[ $t == duplex ]]; then
            args=(duplex --listen 127.0.0.1:0 --primary "127.0.0.1:${BACKEND[duplex]}"
                --secondary "127.0.0.1:$SECONDARY_PORT")
        fi
        if ! start_fanout "fanout-$t" "${args[@]}"; then
            START_ERROR="fanout $t did not start: $(tail -c 300 "$WORK/logs/fanout-$t.err" | tr '\n' ' ')"
            return 1
        fi
        ADDR[$t]=$FANOUT_ADDR
        PROXY_PID[$t]=$STARTED_PID
        ;;
    haproxy)
        start haproxy "${PIN_PROXY[@]}" haproxy -db -f "$WORK/haproxy.cfg"
        wait_port "$HAPROXY_PORT" "$STARTED_PID" haproxy
        ADDR[$t]=127.0.0.1:$HAPROXY_PORT
        PROXY_PID[$t]=$STARTED_PID
        ;;
    *)
        die "unknown target '$t' (direct, relay, duplex, haproxy)"
        ;;
    esac
}
