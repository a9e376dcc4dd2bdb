# shellcheck shell=bash disable=SC2034 # (variables here are for the scripts that source this file)
# Shared by bench/run.sh, bench/bulk.sh, bench/redis.sh and bench/profile.sh: the targets,
# prerequisites, the processes under test, CPU accounting, cleanup, report helpers.
#
# The sourcing script sets (or leaves to their defaults) the BENCH_* variables below, sources this
# file, then calls, in order:
#   parse_targets LIST  the comma-separated targets into TARGET_LIST (dies on an unknown one) and
#                       what they need into REQUIRE (the script adds its own tools with `need`)
#   prepare             install what is missing, build fanout, check fanout knows every flag a
#                       target passes, raise limits, decide the pinning
#   make_workdir        the temp dir WORK (logs/, res/)
#   ... the script's origin (make_www + start_backends for the HTTP one), which sets ORIGIN[T]
#       (host:port each target forwards to) and SECONDARY (duplex's secondary, host:port)
#   start_target T      sets ADDR[T] and, for proxies, PROXY_PID[T] (the process doing the work)
# Everything started is stopped by the EXIT trap this file installs; the sourcing script may define
# keep_results (called with WORK still there, before it is removed).
#
# Adding a target: a LABEL and a KIND below, plus for fanout its FANOUT_MODE and FANOUT_EXTRA
# (extra arguments), for HAProxy its HAPROXY_EXTRA (extra lines for `defaults`), and
# PROXY_CPUS=multi if it should run on BENCH_MULTI_CPUS rather than on the proxy CPU alone.

SMALL_BYTES=${BENCH_SMALL_BYTES:-64}     # body of GET /small
LARGE_MIB=${BENCH_LARGE_MIB:-1024}       # size of GET /large
PIN=${BENCH_PIN:-1}                      # 1: proxies on PROXY_CPU, the load (clients, origins) on LOAD_CPU
PROXY_CPU=${BENCH_PROXY_CPU:-1}
LOAD_CPU=${BENCH_LOAD_CPU:-0}                # a taskset list ("0,3") works too
MULTI_CPUS=${BENCH_MULTI_CPUS:-$PROXY_CPU,$LOAD_CPU} # the CPUs of a multi-threaded proxy (relay-2t)
FANOUT_BIN=${BENCH_FANOUT_BIN:-}         # use this binary instead of building target/release/fanout
FANOUT_ARGS=${BENCH_FANOUT_ARGS:-}       # extra arguments for every fanout target (per target: BENCH_FANOUT_ARGS_<T>)
INSTALL=${BENCH_INSTALL:-1}              # 0: never run apt-get
HAPROXY_GLOBAL=${BENCH_HAPROXY_GLOBAL:-} # extra lines for haproxy's global section, ';'-separated
HAPROXY_DEFAULTS=${BENCH_HAPROXY_DEFAULTS:-} # ... and for its defaults section (both haproxy targets)
NGINX_STREAM=${BENCH_NGINX_STREAM:-}     # extra lines for nginx-stream's server block, ';'-separated
NICE=${BENCH_NICE:-0}                    # e.g. -10: the benchmark's processes get the CPU before others'

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
RESULTS_DIR="$BENCH_DIR/results"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------- targets
# The letters stay with a target whichever ones a run selects, so tables of different runs agree.
declare -A ADDR=() PROXY_PID=() LABEL=() KIND=() BACKEND=() ORIGIN=()
declare -A FANOUT_MODE=() FANOUT_EXTRA=() HAPROXY_EXTRA=() PROXY_CPUS=()
LABEL[direct]="(a) direct, no proxy";                KIND[direct]=direct
LABEL[relay]="(b) fanout relay";                     KIND[relay]=fanout;   FANOUT_MODE[relay]=relay
LABEL[duplex]="(c) fanout duplex, 1 secondary";      KIND[duplex]=fanout;  FANOUT_MODE[duplex]=duplex
LABEL[haproxy]="(d) haproxy mode tcp, nbthread 1";   KIND[haproxy]=haproxy
LABEL[nginx-stream]="(e) nginx stream, 1 worker";    KIND[nginx-stream]=nginx-stream
LABEL[haproxy-splice]="(f) haproxy, option splice-auto"; KIND[haproxy-splice]=haproxy
HAPROXY_EXTRA[haproxy-splice]="option splice-auto"
LABEL[relay-copy]="(g) fanout relay --splice never"; KIND[relay-copy]=fanout; FANOUT_MODE[relay-copy]=relay
FANOUT_EXTRA[relay-copy]="--splice never"
LABEL[relay-splice]="(h) fanout relay --splice always"; KIND[relay-splice]=fanout; FANOUT_MODE[relay-splice]=relay
FANOUT_EXTRA[relay-splice]="--splice always"
LABEL[relay-2t]="(i) fanout relay --threads 2"; KIND[relay-2t]=fanout; FANOUT_MODE[relay-2t]=relay
FANOUT_EXTRA[relay-2t]="--threads 2"
PROXY_CPUS[relay-2t]=multi               # on BENCH_MULTI_CPUS: see bench/README.md
ALL_TARGETS="direct,relay,duplex,haproxy,nginx-stream,haproxy-splice,relay-copy,relay-splice,relay-2t"

REQUIRE=()       # "COMMAND PACKAGE" or "/FILE PACKAGE": what this run needs, installed by prepare
need() { REQUIRE+=("$1 $2"); }
NGINX_MODULES=/usr/lib/nginx/modules     # Debian's --modules-path
STREAM_MODULE=$NGINX_MODULES/ngx_stream_module.so

parse_targets() { # parse_targets LIST [ALLOWED]: sets TARGET_LIST and NEEDS_FANOUT, adds to REQUIRE
    local t allowed=${2:-$ALL_TARGETS}
    IFS=, read -r -a TARGET_LIST <<<"$1"
    ((${#TARGET_LIST[@]})) || die "no targets (BENCH_TARGETS is empty)"
    NEEDS_FANOUT=0
    for t in "${TARGET_LIST[@]}"; do
        [[ ,$allowed, == *",$t,"* && -n ${KIND[$t]:-} ]] || die "unknown target '$t' (this script knows: $allowed)"
        case ${KIND[$t]} in
        fanout) NEEDS_FANOUT=1 ;;
        haproxy) need haproxy haproxy ;;
        nginx-stream) need nginx nginx; need "$STREAM_MODULE" libnginx-mod-stream ;;
        esac
    done
}
has_target() { [[ " ${TARGET_LIST[*]} " == *" $1 "* ]]; }

fanout_args() {  # fanout_args T: the extra arguments of fanout target T, one a line
    local var=BENCH_FANOUT_ARGS_${1^^}
    var=${var//-/_}
    local words=()
    read -r -a words <<<"${FANOUT_EXTRA[$1]:-} $FANOUT_ARGS ${!var:-}"
    ((${#words[@]})) && printf '%s\n' "${words[@]}"
    return 0
}

check_fanout_flags() { # every --flag a fanout target passes must be in `fanout MODE --help`
    local t flag help
    for t in "${TARGET_LIST[@]}"; do
        [[ ${KIND[$t]} == fanout ]] || continue
        help=$("$FANOUT_BIN" "${FANOUT_MODE[$t]}" --help 2>&1) || die "$FANOUT_BIN ${FANOUT_MODE[$t]} --help failed: $help"
        while read -r flag; do
            [[ $flag == --* ]] || continue
            flag=${flag%%=*}
            grep -qE -- "(^|[ ,])$flag([ =,]|$)" <<<"$help" ||
                die "target $t passes $flag, but '$FANOUT_BIN ${FANOUT_MODE[$t]} --help' does not list it (a fanout without that flag; rebuild, or leave $t out of BENCH_TARGETS)"
        done < <(fanout_args "$t")
    done
}

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
    local missing=() sudo=() item what pkg
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v ps >/dev/null || missing+=(procps)
    for item in "${REQUIRE[@]}"; do
        read -r what pkg <<<"$item"
        if [[ $what == /* ]]; then [[ -e $what ]] && continue; else command -v "$what" >/dev/null && continue; fi
        [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $INSTALL == 1 ]] || die "missing: ${missing[*]} (BENCH_INSTALL=0 forbids apt-get)"
    command -v apt-get >/dev/null || die "missing: ${missing[*]} (packages of Debian; no apt-get here to install them)"
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
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
    for item in "${REQUIRE[@]}"; do
        read -r what pkg <<<"$item"
        if [[ $what == /* ]]; then [[ -e $what ]] || die "$pkg is installed but $what is not there"; fi
    done
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

prepare() {      # after parse_targets (and the script's own `need`s)
    export PATH="$PATH:/usr/sbin:/sbin"
    install_missing
    if [[ $NEEDS_FANOUT == 1 ]]; then
        build_fanout
        check_fanout_flags
    fi
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    CLK_TCK=$(getconf CLK_TCK)
    # HAProxy refuses to start when maxconn needs more descriptors than the limit allows
    # (2 sockets per connection, and 2 pipe ends more with splicing).
    HAPROXY_MAXCONN=$((($(ulimit -n) - 100) / 4))
    if ((HAPROXY_MAXCONN > 10000)); then HAPROXY_MAXCONN=10000; fi
    if [[ $NICE != 0 ]]; then
        # Everything started from here on (origins, proxies, clients) inherits this, alike for all.
        renice -n "$NICE" -p $$ >/dev/null || die "renice -n $NICE failed (negative values need root)"
    fi
    PIN_PROXY=()
    PIN_LOAD=()
    PIN_MULTI=()
    if [[ $PIN == 1 ]] && (($(nproc) >= 2)); then
        PIN_PROXY=(taskset -c "$PROXY_CPU")
        PIN_LOAD=(taskset -c "$LOAD_CPU")
        PIN_MULTI=(taskset -c "$MULTI_CPUS")
        PINNING="proxy on cpu $PROXY_CPU; origins and clients on cpu $LOAD_CPU"
        local t
        for t in "${TARGET_LIST[@]}"; do
            if [[ ${PROXY_CPUS[$t]:-} == multi ]]; then
                PINNING+="; $t on cpus $MULTI_CPUS"
            fi
        done
    else
        PINNING="none (BENCH_PIN=$PIN, $(nproc) cpus)"
    fi
}

pin_proxy() {    # pin_proxy T: sets PIN_T, the taskset prefix for proxy target T
    if [[ ${PROXY_CPUS[$1]:-} == multi ]]; then PIN_T=("${PIN_MULTI[@]}"); else PIN_T=("${PIN_PROXY[@]}"); fi
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
make_workdir() { # the temp dir: configs, logs/, res/ (measurements), www/ and nginx-tmp/ for nginx
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/fanout-bench.XXXXXX")
    chmod 755 "$WORK" # nginx workers run as nobody
    mkdir -p "$WORK/www" "$WORK/res" "$WORK/logs" "$WORK/nginx-tmp"
}

make_www() {     # the HTTP origin of run.sh and profile.sh: /small, /large and nginx.conf
    local i t port
    # Each target reaches nginx on a port of its own: with a new connection per request, the
    # TIME-WAIT sockets one target leaves behind then never collide with the next target's
    # connections (same 4-tuple), so no target pays for the one measured before it.
    for t in "${TARGET_LIST[@]}"; do
        pick_port port
        BACKEND[$t]=$port
        ORIGIN[$t]=127.0.0.1:$port
    done
    pick_port SECONDARY_PORT  # the duplex secondary: same nginx, another port
    SECONDARY=127.0.0.1:$SECONDARY_PORT

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

    {
        cat <<EOF
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
EOF
        for t in "${TARGET_LIST[@]}"; do
            printf '    server { listen 127.0.0.1:%s; root %s/www; } # %s\n' "${BACKEND[$t]}" "$WORK" "$t"
        done
        printf '    server { listen 127.0.0.1:%s; root %s/www; } # duplex secondary\n' "$SECONDARY_PORT" "$WORK"
        echo "}"
    } >"$WORK/nginx.conf"
}

write_haproxy_cfg() { # write_haproxy_cfg T PORT: $WORK/T.cfg, listening on PORT, forwarding to ORIGIN[T]
    local t=$1 port=$2
    cat >"$WORK/$t.cfg" <<EOF
# generated by bench/lib.sh: plain TCP relay, one thread, no logging
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
$(tr ';' '\n' <<<"$HAPROXY_GLOBAL" | sed -e '/^ *$/d' -e 's/^ */    /')
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
$(tr ';' '\n' <<<"$HAPROXY_DEFAULTS;${HAPROXY_EXTRA[$t]:-}" | sed -e '/^ *$/d' -e 's/^ */    /')
frontend bench
    bind 127.0.0.1:$port
    default_backend origin
backend origin
    server origin ${ORIGIN[$t]}
EOF
}

cpu_mask() {     # cpu_mask N: nginx's worker_cpu_affinity bit mask for CPU N ("10" for CPU 1)
    local m=1 i
    for ((i = 0; i < $1; i++)); do m+=0; done
    echo "$m"
}

write_nginx_stream_conf() { # write_nginx_stream_conf T PORT: $WORK/T.conf, a TCP proxy to ORIGIN[T]
    local t=$1 port=$2 affinity=""
    if ((${#PIN_PROXY[@]})) && [[ ${PROXY_CPUS[$t]:-} != multi ]]; then
        affinity="worker_cpu_affinity $(cpu_mask "$PROXY_CPU");"
    fi
    cat >"$WORK/$t.conf" <<EOF
# generated by bench/lib.sh: nginx's stream (TCP) proxy, one worker, no logging; a process of its
# own, not the origin nginx
load_module $STREAM_MODULE;
daemon off;
master_process on;
worker_processes 1;
$affinity
pid $WORK/$t.pid;
error_log $WORK/logs/$t-error.log warn;
events { worker_connections 16384; }
stream {
    access_log off;
    server {
        listen 127.0.0.1:$port;
        proxy_pass ${ORIGIN[$t]};
$(tr ';' '\n' <<<"$NGINX_STREAM" | sed -e '/^ *$/d' -e 's/^ */        /' -e 's/$/;/')
    }
}
EOF
}

# ------------------------------------------------------------------------------------------- targets
start_backends() { # the HTTP origin (make_www's nginx.conf) on the load CPU
    start nginx "${PIN_LOAD[@]}" nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/logs/nginx-error.log"
    local port
    for port in "${BACKEND[@]}" "$SECONDARY_PORT"; do wait_port "$port" "$STARTED_PID" nginx; done
}

start_fanout() { # start_fanout NAME [PIN...] -- ARGS...: sets FANOUT_ADDR from its "listening on" line
    local name=$1 i line="" pin=()
    shift
    while [[ $1 != -- ]]; do pin+=("$1"); shift; done
    shift
    start "$name" "${pin[@]}" "$FANOUT_BIN" "$@"
    for ((i = 0; i < 100; i++)); do
        line=$(grep -m1 '^listening on ' "$WORK/logs/$name.out" 2>/dev/null || true)
        [[ -n $line ]] && break
        kill -0 "$STARTED_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    [[ -n $line ]] || return 1
    FANOUT_ADDR=${line#listening on }
}

only_child() {   # only_child PID: the pid of PID's one child (nginx's worker), waiting up to 5s for it
    local i kids
    for ((i = 0; i < 50; i++)); do
        kids=$(ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true)
        if [[ -n $kids && $kids != *$'\n'* ]]; then echo "$kids"; return 0; fi
        sleep 0.1
    done
    return 1
}

start_target() { # start_target T: 1 (with a message in START_ERROR) if it did not come up
    local t=$1 port args extra=()
    START_ERROR=""
    [[ -n ${ORIGIN[$t]:-} ]] || die "no origin for target $t (the script must set ORIGIN[$t])"
    pin_proxy "$t"
    case ${KIND[$t]} in
    direct)
        ADDR[$t]=${ORIGIN[$t]}
        ;;
    fanout)
        args=("${FANOUT_MODE[$t]}" --listen 127.0.0.1:0)
        if [[ ${FANOUT_MODE[$t]} == duplex ]]; then
            args+=(--primary "${ORIGIN[$t]}" --secondary "$SECONDARY")
        else
            args+=(--to "${ORIGIN[$t]}")
        fi
        mapfile -t extra < <(fanout_args "$t")
        args+=("${extra[@]}")
        echo "${args[*]}" >"$WORK/$t.args"
        if ! start_fanout "fanout-$t" "${PIN_T[@]}" -- "${args[@]}"; then
            START_ERROR="fanout ${args[*]} did not start: $(tail -c 300 "$WORK/logs/fanout-$t.err" | tr '\n' ' ')"
            return 1
        fi
        ADDR[$t]=$FANOUT_ADDR
        PROXY_PID[$t]=$STARTED_PID
        ;;
    haproxy)
        pick_port port
        write_haproxy_cfg "$t" "$port"
        start "$t" "${PIN_T[@]}" haproxy -db -f "$WORK/$t.cfg"
        wait_port "$port" "$STARTED_PID" "$t"
        ADDR[$t]=127.0.0.1:$port
        PROXY_PID[$t]=$STARTED_PID
        ;;
    nginx-stream)
        pick_port port
        write_nginx_stream_conf "$t" "$port"
        start "$t" "${PIN_T[@]}" nginx -p "$WORK" -c "$WORK/$t.conf" -e "$WORK/logs/$t-error.log"
        wait_port "$port" "$STARTED_PID" "$t"
        ADDR[$t]=127.0.0.1:$port
        # The worker does the relaying; the master only started it. Its CPU is what we measure.
        PROXY_PID[$t]=$(only_child "$STARTED_PID") || {
            START_ERROR="nginx-stream: not exactly one worker process"
            return 1
        }
        ;;
    *)
        die "unknown target '$t'"
        ;;
    esac
}

# ------------------------------------------------------------------------------------ CPU accounting
# sample_begin T ... sample_end T around a measurement: S_TICKS (the proxy's utime+stime, in clock
# ticks; 0 for direct), S_NS (wall time), S_OTHERS (percent of the proxy CPU's busy time the proxy
# did not spend: other work competing with it; empty when not pinned or on more than one CPU).
sample_begin() {
    local pid=${PROXY_PID[$1]:-}
    S_C0=0 S_B0=0
    if [[ -n $pid ]]; then S_C0=$(cpu_ticks "$pid"); fi
    if ((${#PIN_PROXY[@]})); then S_B0=$(cpu_busy_ticks "$PROXY_CPU"); fi
    S_T0=$(now_ns)
}

sample_end() {   # 1 if the proxy died meanwhile
    local t=$1 pid=${PROXY_PID[$1]:-} c1=0 b1=0
    S_NS=$(($(now_ns) - S_T0))
    if ((${#PIN_PROXY[@]})); then b1=$(cpu_busy_ticks "$PROXY_CPU"); fi
    if [[ -n $pid ]]; then
        kill -0 "$pid" 2>/dev/null || return 1
        c1=$(cpu_ticks "$pid") || return 1
    fi
    S_TICKS=$((c1 - S_C0))
    S_OTHERS=""
    if ((${#PIN_PROXY[@]})) && [[ ${PROXY_CPUS[$t]:-} != multi ]]; then
        S_OTHERS=$(awk -v d=$((b1 - S_B0 - S_TICKS)) -v hz="$CLK_TCK" -v ns="$S_NS" \
            'BEGIN { v = d / hz / (ns / 1e9) * 100; printf "%.0f\n", (v < 0 ? 0 : v > 100 ? 100 : v) }')
    fi
}

sample_pct() {   # the proxy's CPU over the wall time of the last sample, in percent of one CPU
    awk -v d="$S_TICKS" -v hz="$CLK_TCK" -v ns="$S_NS" 'BEGIN { printf "%.1f\n", d / hz / (ns / 1e9) * 100 }'
}

# ------------------------------------------------------------------------------ results and reports
# Each measurement appends one number a line to $WORK/res/T.METRIC; the report takes medians.
fail() {         # fail TARGET REASON: the target is out of the remaining rounds; the run exits 1
    log "FAILED $1: $2"
    echo "$2" >"$WORK/res/$1.fail"
}
failed() { [[ -e $WORK/res/$1.fail ]]; }
record() { echo "$3" >>"$WORK/res/$1.$2"; } # record TARGET METRIC VALUE

median() {       # median of the numbers in a file, one a line; "nan" when empty
    [[ -s $1 ]] || { echo nan; return 0; }
    sort -g "$1" | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A M=()  # M[T.METRIC]: the median over the rounds
medians() {      # medians METRIC...: fills M for every target
    local t m
    for t in "${TARGET_LIST[@]}"; do
        for m in "$@"; do M[$t.$m]=$(median "$WORK/res/$t.$m"); done
    done
}

fmt() {          # fmt VALUE DECIMALS: "-" for a missing value
    [[ $1 == nan || -z $1 ]] && { echo "-"; return; }
    awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'
}
ratio() {        # ratio A B: A/B as "0.93x"; "-" when either is missing
    [[ $1 == nan || $2 == nan || -z $1 || -z $2 ]] && { echo "-"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'
}
per_round() {    # per_round A B METRIC: A/B of each round, as "1.02x 0.97x 1.10x"
    paste -d' ' "$WORK/res/$1.$3" "$WORK/res/$2.$3" |
        awk '{ printf "%s%s", (NR > 1 ? " " : ""), ($1 == "" || $2 == "" || $2 == 0 ? "-" : sprintf("%.2fx", $1 / $2)) }'
}
usable() { has_target "$1" && ! failed "$1"; } # in the run and not failed

ratio_table() {  # ratio_table REF METRIC:HEADER...: every target's medians over REF's, one table
    local ref=$1 t spec m
    usable "$ref" || return 0
    shift
    echo
    echo "Ratios vs ${LABEL[$ref]}"
    echo
    printf '| target |'
    for spec in "$@"; do printf ' %s |' "${spec#*:}"; done
    printf '\n|---|'
    for spec in "$@"; do printf -- '---:|'; done
    echo
    for t in "${TARGET_LIST[@]}"; do
        failed "$t" && continue
        printf '| %s |' "${LABEL[$t]}"
        for spec in "$@"; do
            m=${spec%%:*}
            printf ' %s |' "$(ratio "${M[$t.$m]:-nan}" "${M[$ref.$m]:-nan}")"
        done
        echo
    done
}

begin_run() {   # before the first measurement: wait for quiet (BENCH_WAIT_QUIET), note the load and the time
    if ((WAIT_QUIET > 0)); then wait_quiet "$WAIT_QUIET"; fi
    LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
    STARTED_AT=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
    if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
        log "note: load average is $LOAD_START before the run: other work on this machine makes the numbers noisy"
    fi
}

publish_report() {   # publish_report NAME RAW WHY_FAILED: print $REPORT, keep it as results/NAME, exit 1 if a target failed
    local name=$1 raw=$2 why=$3 nfailed
    echo
    cat "$REPORT"
    mkdir -p "$RESULTS_DIR"
    cp "$REPORT" "$RESULTS_DIR/$name"
    log "wrote $RESULTS_DIR/$name; $raw"
    nfailed=$(failed_count)
    if ((nfailed > 0)); then
        log "$nfailed target(s) failed: $why"
        exit 1
    fi
}

failed_count() {
    local t n=0
    for t in "${TARGET_LIST[@]}"; do if failed "$t"; then n=$((n + 1)); fi; done
    echo "$n"
}

run_header() {   # the lines every report starts with (after its title and the workload)
    local commit t line=""
    commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$REPO_DIR" diff --quiet HEAD -- 2>/dev/null || commit+="+dirty"
    echo "- commit $commit; $(haproxy -v 2>/dev/null | head -n1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3)"
    if [[ -n $FANOUT_BIN ]]; then
        echo "- fanout binary $FANOUT_BIN, built $(date -u -r "$FANOUT_BIN" '+%Y-%m-%d %H:%M:%S UTC')"
    fi
    echo "- $(nproc) cpus; load average $LOAD_START at start, $LOAD_END at end"
    echo "- pinning: $PINNING; nice $NICE for every process of the benchmark"
    for t in "${TARGET_LIST[@]}"; do
        if [[ -e $WORK/$t.args ]]; then line+="; $t: \`fanout $(<"$WORK/$t.args")\`"; fi
    done
    if [[ -n $line ]]; then echo "- ${line#; }"; fi
    if [[ -n $HAPROXY_GLOBAL$HAPROXY_DEFAULTS ]]; then
        echo "- haproxy config beyond the defaults: global '$HAPROXY_GLOBAL', defaults '$HAPROXY_DEFAULTS'"
    fi
    if [[ -n $NGINX_STREAM ]]; then echo "- nginx stream server block beyond the defaults: '$NGINX_STREAM'"; fi
    return 0
}
