#!/usr/bin/env bash
# A secondary's faults and the primary's p99 (issue 12): "a dead, stalled or slow secondary moves
# the primary's p99 by less than 5%", measured in one run.
#
# Through each target, with the same wrk load on GET /small and the same CPU pinning as run.sh,
# in interleaved rounds:
#   relay     (a) wrk -> fanout relay  -> nginx
#   healthy   (b) wrk -> fanout duplex -> nginx; secondary: nginx's second port (run.sh's duplex)
#   dead      (c) the same duplex; secondary: a loopback port nothing listens on (connect refused)
#   stalled   (d) the same duplex; secondary: accepts every connection, never reads, never answers
#   slow      (e) the same duplex; secondary: answers every request as nginx does, byte for byte,
#                 but BENCH_SLOW_MS (50) late
# and reports req/s, p50 and p99 latency (wrk --latency), the proxy's CPU per request, and the
# ratios against (a) and (b). The secondary's faults must be invisible to the client: a socket
# error or a non-2xx answer seen by wrk fails the target and the run (exit 1).
#
# All traffic goes to 127.0.0.1. Every process this script starts is stopped on exit, Ctrl-C included.
set -euo pipefail

# ---------------------------------------------------------------------------------------------- knobs
DURATION=${BENCH_DURATION:-10s}          # wrk -d, per measured run
WARMUP=${BENCH_WARMUP:-1s}               # wrk -d of the unmeasured warm-up before each run; 0 skips it
CONNECTIONS=${BENCH_CONNECTIONS:-64}     # wrk -c
THREADS=${BENCH_THREADS:-1}              # wrk -t
RUNS=${BENCH_RUNS:-3}                    # rounds; each metric is the median over the rounds
TARGETS=${BENCH_TARGETS:-relay,healthy,dead,stalled,slow}
SLOW_MS=${BENCH_SLOW_MS:-50}             # how late the slow secondary answers each request
NEW_CONN=${BENCH_NEW_CONN:-0}            # 1: "Connection: close", a new session (and secondary) per request
WAIT_QUIET=${BENCH_WAIT_QUIET:-0}        # wait up to this many seconds for the machine to be <10% busy
GOAL=1.05                                # p99 of a faulty secondary over the healthy one's, at most
: "${BENCH_LARGE_MIB:=1}"                # lib.sh's origin also serves /large; nothing here fetches it
# BENCH_PIN, BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_NICE, BENCH_FANOUT_BIN, BENCH_FANOUT_ARGS(_<T>)
# and BENCH_INSTALL are read by lib.sh.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALLOWED=relay,healthy,dead,stalled,slow
LABEL[relay]="(a) fanout relay"
LABEL[healthy]="(b) duplex, healthy secondary"
LABEL[dead]="(c) duplex, dead secondary"
LABEL[stalled]="(d) duplex, stalled secondary"
LABEL[slow]="(e) duplex, slow secondary"
for t in healthy dead stalled slow; do KIND[$t]=fanout; FANOUT_MODE[$t]=duplex; done
declare -A SERVER_PID=() SECONDARY_OF=()

keep_results() { # raw wrk output, servers' logs, fanout's reports of the last run
    mkdir -p "$RESULTS_DIR"
    rm -rf "$RESULTS_DIR/last-secondary-faults"
    cp -r "$WORK" "$RESULTS_DIR/last-secondary-faults"
    rm -rf "$RESULTS_DIR/last-secondary-faults/www" "$RESULTS_DIR/last-secondary-faults/nginx-tmp"
}

to_ms() {        # wrk latency ("812.00us", "1.25ms", "2.01s", "1.00m") -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f\n", n }'
}

write_servers() { # $WORK/faulty.py: the stalled and the slow secondary
    cat >"$WORK/faulty.py" <<'EOF'
"""Faulty secondaries for bench/secondary_faults.sh.

  faulty.py stall PORT STATS
      Accepts every connection and never reads nor answers, nor closes: a hung process. It holds
      every socket to the end (its descriptor limit raised to the hard limit); it only counts
      those fanout has closed its end of (EPOLLRDHUP, which needs no read).
  faulty.py slow PORT STATS ORIGIN DELAY_MS
      Answers every request head with ORIGIN's own answer to GET /small, byte for byte (the Date
      header taken when the request came in), DELAY_MS after the request came in. A delay line,
      not a queue: it keeps up with any rate, each answer is just late.

Counters go to STATS (a JSON object) every second and at SIGTERM.
"""
import asyncio
import collections
import email.utils
import errno
import json
import os
import resource
import select
import signal
import socket
import sys
import time


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    s.setblocking(False)
    return s


def write_stats(path, stats):
    with open(path + ".tmp", "w") as f:
        json.dump(stats, f)
    os.replace(path + ".tmp", path)


def stall(port, path):
    stats = {"nofile": raise_nofile(), "accepted": 0, "closed_by_fanout": 0, "held": 0, "accept_errors": 0}
    lst = listener(port)
    ep = select.epoll()
    ep.register(lst.fileno(), select.EPOLLIN)
    held = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    last = 0.0
    try:
        while True:
            for fd, _ in ep.poll(1.0):
                if fd == lst.fileno():
                    while True:
                        try:
                            conn, _ = lst.accept()
                        except BlockingIOError:
                            break
                        except OSError as e:  # EMFILE and the like: counted, tried again later
                            stats["accept_errors"] += 1
                            if e.errno in (errno.EMFILE, errno.ENFILE):
                                time.sleep(0.01)
                            break
                        held[conn.fileno()] = conn
                        ep.register(conn.fileno(), select.EPOLLRDHUP)  # never EPOLLIN: never read
                        stats["accepted"] += 1
                else:  # fanout closed (or reset) its end: counted, and held all the same
                    ep.unregister(fd)
                    stats["closed_by_fanout"] += 1
            stats["held"] = len(held)
            if time.monotonic() - last >= 1.0:
                write_stats(path, stats)
                last = time.monotonic()
    finally:
        stats["held"] = len(held)
        write_stats(path, stats)


def fetch_template(origin):
    """ORIGIN's answer to GET /small, split around its Date value."""
    host, port = origin.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /small HTTP/1.1\r\nHost: " + origin.encode() + b"\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("origin closed before its answer's head")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(v.split(b":", 1)[1]) for v in lines if v.lower().startswith(b"content-length:"))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("origin closed before its answer's body")
            body += chunk
    if not lines[0].startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"origin answered {lines[0]!r}")
    i = next(i for i, v in enumerate(lines) if v.lower().startswith(b"date:"))
    before = b"\r\n".join(lines[:i]) + b"\r\n" + lines[i].split(b":", 1)[0] + b": "
    after = b"\r\n" + b"\r\n".join(lines[i + 1:]) + b"\r\n\r\n" + body[:length]
    return before, after


def slow(port, path, origin, delay_ms):
    stats = {"nofile": raise_nofile(), "accepted": 0, "open": 0, "max_open": 0, "requests": 0,
             "answered": 0, "max_queued": 0}
    before, after = fetch_template(origin)
    delay = delay_ms / 1000
    cache = [None, b""]

    def answer_now():  # nginx's answer with the Date of this second
        sec = int(time.time())
        if cache[0] != sec:
            cache[0] = sec
            cache[1] = before + email.utils.formatdate(sec, usegmt=True).encode() + after
        return cache[1]

    loop = asyncio.new_event_loop()
    queue = collections.deque()  # (due, protocol, bytes, count): dues never decrease
    wake = asyncio.Event()

    class Slow(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.tail, self.open, self.eof, self.pending = transport, b"", True, False, 0
            stats["accepted"] += 1
            stats["open"] += 1
            stats["max_open"] = max(stats["max_open"], stats["open"])

        def data_received(self, data):
            buf = self.tail + data
            n = buf.count(b"\r\n\r\n")  # GETs without a body: one head, one request
            if n == 0:
                self.tail = buf if len(buf) < 65536 else b""
                return
            self.tail = buf[buf.rfind(b"\r\n\r\n") + 4:]
            stats["requests"] += n
            if not queue:
                wake.set()
            self.pending += 1
            queue.append((loop.time() + delay, self, answer_now() * n, n))
            stats["max_queued"] = max(stats["max_queued"], len(queue))

        def eof_received(self):  # fanout is done sending: answer what came, then close
            self.eof = True
            if self.pending == 0:
                self.transport.close()
            return True

        def connection_lost(self, exc):
            self.open = False
            stats["open"] -= 1

    async def deliver():  # answers fall due in order; one write per connection per wake-up
        while True:
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            now = loop.time()
            if queue[0][0] > now:
                await asyncio.sleep(queue[0][0] - now)
                continue
            out = {}
            while queue and queue[0][0] <= now:
                _, proto, data, n = queue.popleft()
                out.setdefault(proto, []).append(data)
                proto.pending -= 1
                stats["answered"] += n
            for proto, parts in out.items():
                if proto.open:
                    proto.transport.write(b"".join(parts))
                    if proto.eof and proto.pending == 0:
                        proto.transport.close()

    def tick():
        write_stats(path, stats)
        loop.call_later(1.0, tick)

    lst = listener(port)
    server = loop.run_until_complete(loop.create_server(Slow, sock=lst, backlog=4096))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    task = loop.create_task(deliver())
    tick()
    try:
        loop.run_forever()
    finally:
        write_stats(path, stats)
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        server.close()


if __name__ == "__main__":
    if sys.argv[1] == "stall":
        stall(int(sys.argv[2]), sys.argv[3])
    else:
        slow(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
EOF
}

start_secondaries() { # sets SECONDARY_OF[T] (and SERVER_PID[T] for the python servers)
    local port
    SECONDARY_OF[healthy]=$SECONDARY
    if has_target dead; then
        pick_port port  # nothing ever listens here: every connect is refused
        DEAD_PORT=$port
        SECONDARY_OF[dead]=127.0.0.1:$port
    fi
    if has_target stalled; then
        pick_port port
        start stalled "${PIN_LOAD[@]}" python3 "$WORK/faulty.py" stall "$port" "$WORK/stalled.stats"
        wait_port "$port" "$STARTED_PID" stalled
        SERVER_PID[stalled]=$STARTED_PID
        SECONDARY_OF[stalled]=127.0.0.1:$port
    fi
    if has_target slow; then
        pick_port port
        start slow "${PIN_LOAD[@]}" python3 "$WORK/faulty.py" slow "$port" "$WORK/slow.stats" "$SECONDARY" "$SLOW_MS"
        wait_port "$port" "$STARTED_PID" slow
        SERVER_PID[slow]=$STARTED_PID
        SECONDARY_OF[slow]=127.0.0.1:$port
    fi
}

start_targets() { # lib.sh's start_target, with each duplex target's own secondary
    local t nginx_secondary=$SECONDARY
    for t in "${TARGET_LIST[@]}"; do
        if [[ ${FANOUT_MODE[$t]} == duplex ]]; then
            SECONDARY=${SECONDARY_OF[$t]}
            # What became of each secondary, one JSON line per finished session (the same for
            # every duplex target; it costs a line per session, and sessions are few with keep-alive).
            FANOUT_EXTRA[$t]="--report $WORK/$t.report.jsonl"
        fi
        start_target "$t" || fail "$t" "$START_ERROR"
        SECONDARY=$nginx_secondary
    done
}

# -------------------------------------------------------------------------------------------- setup
parse_targets "$TARGETS" "$ALLOWED"
need nginx nginx
need wrk wrk
need curl curl
need python3 python3
prepare
make_workdir
make_www
start_backends
write_servers
start_secondaries
start_targets

# --------------------------------------------------------------------------------------- measuring
WRK_ARGS=(-t "$THREADS" -c "$CONNECTIONS" --latency)
[[ $NEW_CONN == 1 ]] && WRK_ARGS+=(-H "Connection: close")

check_target() { # GET /small through the target must return the file, byte for byte
    local t=$1
    if ! run_child /dev/null curl -sf --max-time 5 -o "$WORK/check.small" "http://${ADDR[$t]}/small"; then
        fail "$t" "GET /small failed"
        return 1
    fi
    if ! cmp -s "$WORK/check.small" "$WORK/www/small"; then
        fail "$t" "GET /small returned other bytes than the file"
        return 1
    fi
}

measure() {      # measure TARGET ROUND: one wrk run; records rps, p50, p99, CPU/req, the server's CPU
    local t=$1 round=$2 addr=${ADDR[$1]} out="$WORK/logs/wrk-$1-$2.txt" spid=${SERVER_PID[$1]:-} s0=0 s1=0 l0=0 l1=0 rss
    if [[ $t == dead ]] && port_in_use "$DEAD_PORT"; then
        fail "$t" "something listens on the dead secondary's port $DEAD_PORT"
        return 1
    fi
    if [[ $WARMUP != 0 ]]; then
        run_child /dev/null "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d "$WARMUP" "http://$addr/small" || true
    fi
    if [[ -n $spid ]]; then s0=$(cpu_ticks "$spid") || { fail "$t" "its secondary server died"; return 1; }; fi
    if ((${#PIN_LOAD[@]})); then l0=$(cpu_busy_ticks "$LOAD_CPU"); fi
    sample_begin "$t"
    if ! run_child "$out" "${PIN_LOAD[@]}" wrk "${WRK_ARGS[@]}" -d "$DURATION" "http://$addr/small"; then
        fail "$t" "wrk exited non-zero (see $out)"
        return 1
    fi
    sample_end "$t" || { fail "$t" "proxy process died"; return 1; }
    if ((${#PIN_LOAD[@]})); then l1=$(cpu_busy_ticks "$LOAD_CPU"); fi
    rss=$(awk '/^VmRSS:/ { printf "%.1f\n", $2 / 1024 }' "/proc/${PROXY_PID[$t]}/status" 2>/dev/null || true)
    if [[ -n $spid ]]; then s1=$(cpu_ticks "$spid") || { fail "$t" "its secondary server died"; return 1; }; fi
    local rps reqs p50 p99 sockerr non2xx
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    sockerr=$(awk '/Socket errors:/ { gsub(/,/, ""); print "connect " $4 ", read " $6 ", write " $8 ", timeout " $10 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    if [[ -z $rps || -z $reqs || -z $p50 || -z $p99 ]]; then
        fail "$t" "could not read wrk's output (see $out)"
        return 1
    fi
    if [[ -n $sockerr || -n $non2xx ]] || ((reqs == 0)); then
        fail "$t" "the client saw socket errors (${sockerr:-none}) and ${non2xx:-0} non-2xx answers in $reqs requests (round $round)"
        return 1
    fi
    record "$t" rps "$rps"
    record "$t" p50 "$(to_ms "$p50")"
    record "$t" p99 "$(to_ms "$p99")"
    record "$t" cpu "$(awk -v d="$S_TICKS" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.3f\n", d / hz * 1e6 / n }')"
    record "$t" cpupct "$(sample_pct)"
    if [[ -n $S_OTHERS ]]; then record "$t" others "$S_OTHERS"; fi
    if ((${#PIN_LOAD[@]})); then
        record "$t" loadpct "$(awk -v d=$((l1 - l0)) -v hz="$CLK_TCK" -v ns="$S_NS" 'BEGIN { v = d / hz / (ns / 1e9) * 100; printf "%.0f\n", (v > 100 ? 100 : v) }')"
    fi
    if [[ -n $rss ]]; then record "$t" rss "$rss"; fi
    if [[ -n $spid ]]; then
        record "$t" srvpct "$(awk -v d=$((s1 - s0)) -v hz="$CLK_TCK" -v ns="$S_NS" 'BEGIN { printf "%.1f\n", d / hz / (ns / 1e9) * 100 }')"
    fi
    log "  $t round $round: $rps req/s, p50 $p50, p99 $p99, $reqs requests${S_OTHERS:+, others on cpu $PROXY_CPU: $S_OTHERS%}"
}

# ------------------------------------------------------------------------------------------- the run
begin_run
log "targets: $TARGETS; wrk ${WRK_ARGS[*]} -d $DURATION; $RUNS round(s); pinning: $PINNING"

for t in "${TARGET_LIST[@]}"; do
    failed "$t" || check_target "$t" || true
done
for ((round = 1; round <= RUNS; round++)); do
    log "round $round of $RUNS"
    for t in "${TARGET_LIST[@]}"; do  # round-robin: drift on the machine lands on every target alike
        failed "$t" || measure "$t" "$round" || true
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------------------------------ the report
medians rps p50 p99 cpu cpupct others loadpct srvpct rss

outcomes() {     # outcomes T: what fanout's report says became of T's secondaries
    local file=$WORK/$1.report.jsonl
    [[ -s $file ]] || { echo "no session reported yet"; return 0; }
    python3 - "$file" <<'EOF'
import collections, json, sys
count, match, sessions = collections.Counter(), 0, 0
for line in open(sys.argv[1]):
    sessions += 1
    for b in json.loads(line)["backends"]:
        if b["role"] == "secondary":
            count[b["outcome"]] += 1
            match += b["outcome"] == "ok" and b.get("matches_primary") is True
print(f"{sessions} sessions: " + ", ".join(f"{n} {o}" for o, n in count.most_common())
      + (f"; {match} of the ok ones matched the primary" if count["ok"] else ""))
EOF
}

server_stats() { # server_stats T: the python server's counters
    local file=$WORK/$1.stats
    [[ -s $file ]] || { echo "no counters"; return 0; }
    python3 - "$file" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.items()))
EOF
}

p99_vs_healthy() { # p99_vs_healthy T: T's p99 over (b)'s, medians and each round
    echo "$(ratio "${M[$1.p99]}" "${M[healthy.p99]}") (per round $(per_round "$1" healthy p99))"
}

verdict() {      # the goal: every faulty secondary's p99 at most GOAL x the healthy one's
    local t r parts="" goal="met" n=0
    usable healthy || return 0
    for t in dead stalled slow; do
        has_target "$t" || continue
        if failed "$t"; then goal="NOT met"; parts+=", ${LABEL[$t]%%)*}) failed"; continue; fi
        n=$((n + 1))
        r=$(ratio "${M[$t.p99]}" "${M[healthy.p99]}")
        awk -v r="${r%x}" -v g="$GOAL" 'BEGIN { exit !(r != "-" && r < g) }' || goal="NOT met"
        parts+=", ${LABEL[$t]%%)*}) $(p99_vs_healthy "$t")"
    done
    ((n > 0)) || return 0
    echo
    echo "**Goal: a dead, stalled or slow secondary moves the primary's p99 by less than 5% (p99 vs (b) < ${GOAL}x): $goal.** p99 vs (b)${parts#,}."
    if usable relay; then
        parts=""
        for t in dead stalled slow; do
            usable "$t" || continue
            parts+=", ${LABEL[$t]%%)*}) $(ratio "${M[$t.p99]}" "${M[relay.p99]}") (per round $(per_round "$t" relay p99))"
        done
        echo
        echo "Against (a), whose origin does the same work as with a dead or stalled secondary (no second answer to serve): p99 vs (a)${parts#,}."
    fi
}

REPORT="$WORK/report.md"
{
    commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$REPO_DIR" diff --quiet HEAD -- 2>/dev/null || commit+="+dirty"
    echo "# A secondary's faults and the primary's p99, $STARTED_AT"
    echo
    echo "- wrk ${WRK_ARGS[*]} -d $DURATION (warm-up $WARMUP) on GET /small ($SMALL_BYTES-byte body)$([[ $NEW_CONN == 1 ]] && echo ", a new connection per request"); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
    echo "- commit $commit; $(nginx -v 2>&1 | cut -d' ' -f3); $(python3 --version)"
    echo "- $(nproc) cpus; load average $LOAD_START at start, $LOAD_END at end"
    echo "- pinning: $PINNING (the python secondaries too); nice $NICE for every process of the benchmark"
    for t in "${TARGET_LIST[@]}"; do
        if [[ -e $WORK/$t.args ]]; then echo "- $t: \`fanout $(<"$WORK/$t.args")\`"; fi
    done
    echo "- secondaries: (b) nginx's second port; (c) a port nothing listens on; (d) python, accepts and never reads; (e) python, nginx's answer ${SLOW_MS} ms after each request"
    echo "- $RUNS round(s), targets round-robin; each number is the median over the rounds"
    echo "- command: $(env | grep '^BENCH_' | sort | tr '\n' ' ')bench/secondary_faults.sh"
    echo
    echo "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | proxy CPU % | others on proxy CPU % | load CPU busy % | secondary server CPU % | proxy RSS MiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for t in "${TARGET_LIST[@]}"; do
        if failed "$t"; then
            echo "| ${LABEL[$t]} | FAILED: $(<"$WORK/res/$t.fail") |||||||||"
            continue
        fi
        echo "| ${LABEL[$t]} | $(fmt "${M[$t.rps]}" 0) | $(fmt "${M[$t.p50]}" 3) | $(fmt "${M[$t.p99]}" 3) | $(fmt "${M[$t.cpu]}" 2) | $(fmt "${M[$t.cpupct]}" 0) | $(fmt "${M[$t.others]}" 0) | $(fmt "${M[$t.loadpct]}" 0) | $(fmt "${M[$t.srvpct]}" 0) | $(fmt "${M[$t.rss]}" 1) |"
    done
    echo
    echo "Ratios: req/s higher is better; latency and CPU lower is better."
    echo
    echo "| target | req/s vs (a) | p50 vs (a) | p99 vs (a) | CPU/req vs (a) | p50 vs (b) | p99 vs (b) | CPU/req vs (b) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for t in "${TARGET_LIST[@]}"; do
        failed "$t" && continue
        printf '| %s |' "${LABEL[$t]}"
        for spec in relay.rps relay.p50 relay.p99 relay.cpu healthy.p50 healthy.p99 healthy.cpu; do
            printf ' %s |' "$(ratio "${M[$t.${spec#*.}]:-nan}" "${M[$spec]:-nan}")"
        done
        echo
    done
    verdict
    echo
    echo "What became of the secondaries (fanout --report, sessions finished by the end of the run):"
    echo
    for t in "${TARGET_LIST[@]}"; do
        [[ ${FANOUT_MODE[$t]} == duplex && -n ${PROXY_PID[$t]:-} ]] || continue
        echo "- ${LABEL[$t]}: $(outcomes "$t")"
    done
    for t in stalled slow; do
        [[ -n ${SERVER_PID[$t]:-} ]] || continue
        stop_pid "${SERVER_PID[$t]}"  # its counters are final once it has stopped
        echo "- ${LABEL[$t]%%)*}) server: $(server_stats "$t")"
    done
    for t in "${TARGET_LIST[@]}"; do
        if failed "$t"; then echo; echo "FAILURE: ${LABEL[$t]}: $(<"$WORK/res/$t.fail")"; fi
    done
} >"$REPORT"

publish_report secondary_faults.md "raw output in $RESULTS_DIR/last-secondary-faults/" "the secondary's faults reached the client, or a target did not run"
