#!/usr/bin/env python3
"""The seed's beanstalkd scenario at 1/80 scale, with and without `fanout beanstalkd`.

One run, on fresh beanstalkd servers each time:
  1. direct:  JOBS puts of 93-byte jobs (95% delayed 3-24 h, the rest 0-60 s) straight into
              beanstalkd: put rate, then beanstalkd's RSS and job count.
  2. proxied: the same puts through `fanout beanstalkd --archive-after 3h` archiving to SQLite:
              put rate (and its ratio to direct; the goal is >= 0.8x), archive throughput (jobs
              archived per second until the archive caught up), then beanstalkd's RSS and job count.
  3. stores:  STORE_JOBS far-future puts through the proxy per store (sqlite, mysql, postgres):
              archive throughput of each.
  4. lag:     LAG_JOBS jobs archived and put back: how late each job became ready compared with
              the time its delay said (p50/p99/max), measured by a worker reserving them.

Producers open CONNS connections, pipeline WINDOW puts per write and keep IN_FLIGHT windows
outstanding on each (a synchronous client is bounded by round trips, proxy or not). Every
window is built before the clock starts, so the rates are the servers', not Python's. Knobs by environment:
BENCH_JOBS (1000000), BENCH_STORE_JOBS (100000), BENCH_LAG_JOBS (2000), BENCH_CONNS (8),
BENCH_WINDOW (200), BENCH_IN_FLIGHT (2), BENCH_RATE (puts/s at most; 0, unpaced), BENCH_STORES (sqlite,mysql,postgres), BENCH_ARCHIVE_AFTER (3h; anything
else measures the pass-through alone and stops there), FANOUT_BIN (target/release/fanout).
MySQL/PostgreSQL as on this machine kind: mysql://root@127.0.0.1:3306/test,
postgres://postgres@127.0.0.1:5432/postgres. Measure on a quiet machine (`uptime`).
"""

import os
import random
import socket
import subprocess
import sys
import tempfile
import time

JOBS = int(os.environ.get("BENCH_JOBS", 1_000_000))
STORE_JOBS = int(os.environ.get("BENCH_STORE_JOBS", 100_000))
LAG_JOBS = int(os.environ.get("BENCH_LAG_JOBS", 2000))
CONNS = int(os.environ.get("BENCH_CONNS", 8))
WINDOW = int(os.environ.get("BENCH_WINDOW", 200))
# Windows each connection keeps outstanding (sent, answers not yet read).
IN_FLIGHT = int(os.environ.get("BENCH_IN_FLIGHT", 2))
STORES = [s for s in os.environ.get("BENCH_STORES", "sqlite,mysql,postgres").split(",") if s]
# Puts per second at most (0: as fast as the server answers). Below the archive throughput, the
# proxied run shows the steady state of the seed's use case: beanstalkd never holds the far jobs.
RATE = float(os.environ.get("BENCH_RATE", 0))
# Set far beyond every delay (say 1000h) to measure the pass-through alone, archiving nothing.
ARCHIVE_AFTER = os.environ.get("BENCH_ARCHIVE_AFTER", "3h")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FANOUT = os.environ.get("FANOUT_BIN", os.path.join(ROOT, "target", "release", "fanout"))
BODY = 93
HOUR = 3600
children = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"{what} did not listen on {port}")


def beanstalkd():
    port = free_port()
    p = subprocess.Popen(["beanstalkd", "-l", "127.0.0.1", "-p", str(port)])
    children.append(p)
    wait_port(port, "beanstalkd")
    return p, port


def fanout(server_port, store, *extra):
    p = subprocess.Popen(
        [FANOUT, "beanstalkd", "--listen", "127.0.0.1:0", "--server", f"127.0.0.1:{server_port}",
         "--store", store, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    children.append(p)
    line = p.stdout.readline()
    if "listening on" not in line:
        sys.exit(f"fanout beanstalkd did not start: {line!r}")
    return p, int(line.rsplit(":", 1)[1])


def status(store):
    out = subprocess.run([FANOUT, "beanstalkd", "status", "--store", store],
                         capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (l.split() for l in out.splitlines())}


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stats(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"stats\r\n")
    data = b""
    while True:
        data += s.recv(65536)
        head, _, rest = data.partition(b"\r\n")
        if head.startswith(b"OK ") and len(rest) >= int(head[3:]) + 2:
            break
    s.close()
    fields = dict(l.split(": ", 1) for l in rest.decode().splitlines() if ": " in l)
    return int(fields["current-jobs-ready"]) + int(fields["current-jobs-delayed"])


def job(rng, i, far_share):
    delay = rng.randint(3 * HOUR, 24 * HOUR) if rng.random() < far_share else rng.randint(0, 60)
    body = (b"%012d" % i) + b"x" * (BODY - 12)
    return b"put %d %d 60 %d\r\n%s\r\n" % (rng.randint(0, 1000), delay, BODY, body)


def put_all(port, n, far_share=0.95, seed=1):
    """Puts n jobs over CONNS pipelining connections; returns puts per second.

    Every window's bytes are built before the clock starts, so the rate is the servers', not
    Python's: the client only writes prepared windows and counts answers (both in C)."""
    rng = random.Random(seed)
    windows = []
    i = 0
    while i < n:
        k = min(WINDOW, n - i)
        windows.append((b"".join(job(rng, i + j, far_share) for j in range(k)), k))
        i += k
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNS)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Each connection keeps IN_FLIGHT windows outstanding: the next goes out before the answers
    # to the last are read, so the servers never wait on the client.
    outstanding = {s: [] for s in socks}
    done, w, started = 0, 0, time.time()

    def send(s):
        nonlocal w, done
        if w < len(windows):
            payload, k = windows[w]
            s.sendall(payload)
            outstanding[s].append(k)
            w += 1
            done += k
            if RATE > 0:
                ahead = done / RATE - (time.time() - started)
                if ahead > 0:
                    time.sleep(ahead)

    for _ in range(IN_FLIGHT):
        for s in socks:
            send(s)
    buffers = {s: b"" for s in socks}
    while any(outstanding.values()):
        for s in socks:
            if not outstanding[s]:
                continue
            k = outstanding[s].pop(0)
            got = buffers[s]
            while got.count(b"\r\n") < k:
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit("the server closed during the puts")
                got += chunk
            # The answers to this window, and whatever of the next came with them.
            cut = 0
            for _ in range(k):
                cut = got.index(b"\r\n", cut) + 2
            mine, buffers[s] = got[:cut], got[cut:]
            if mine.count(b"INSERTED") != k:
                sys.exit(f"not every put was inserted: {mine[:200]!r}")
            send(s)
    rate = n / (time.time() - started)
    for s in socks:
        s.close()
    return rate


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()


def store_url(kind, tmp, name):
    table = f"fanout_bench_{name}_{os.getpid()}"
    return {
        "sqlite": f"sqlite:{tmp}/{name}.db",
        "mysql": f"mysql://root@127.0.0.1:3306/test?table={table}",
        "postgres": f"postgres://postgres@127.0.0.1:5432/postgres?table={table}",
    }[kind]


def drop_tables():
    name = f"fanout_bench_%_{os.getpid()}"
    subprocess.run(["mysql", "-uroot", "test", "-N", "-e",
                    f"SELECT CONCAT('DROP TABLE ', table_name, ';') FROM information_schema.tables "
                    f"WHERE table_name LIKE '{name}'"], capture_output=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAt", "-c",
                    f"DO $$ DECLARE t text; BEGIN FOR t IN SELECT tablename FROM pg_tables "
                    f"WHERE tablename LIKE '{name}' LOOP EXECUTE 'DROP TABLE ' || t; END LOOP; END $$;"],
                   capture_output=True)


def main():
    print(f"uptime: {os.popen('uptime').read().strip()}")
    tmp = tempfile.mkdtemp(prefix="fanout-bench-")

    # 1. direct
    b, port = beanstalkd()
    direct_rate = put_all(port, JOBS)
    direct_rss, direct_jobs = rss_mib(b.pid), stats(port)
    stop(b)
    print(f"direct:  {JOBS} puts at {direct_rate:,.0f}/s; beanstalkd holds {direct_jobs:,} jobs "
          f"in {direct_rss:,.0f} MiB RSS")

    # 2. proxied, SQLite
    b, port = beanstalkd()
    store = store_url("sqlite", tmp, "main")
    f, fport = fanout(port, store, "--archive-after", ARCHIVE_AFTER)
    started = time.time()
    proxied_rate = put_all(fport, JOBS)
    if ARCHIVE_AFTER != "3h":
        print(f"proxied (archiving nothing): {JOBS} puts at {proxied_rate:,.0f}/s = "
              f"{proxied_rate / direct_rate:.2f}x direct")
        return
    archive_secs = wait_archived_count(store, port, int(JOBS * 0.05 * 1.2) + 10, started)
    proxied_rss, proxied_jobs = rss_mib(b.pid), stats(port)
    archived = status(store)["archived"]
    print(f"proxied: {JOBS} puts at {proxied_rate:,.0f}/s = {proxied_rate / direct_rate:.2f}x direct; "
          f"{archived:,} archived to SQLite in {archive_secs:.1f}s from the first put "
          f"({archived / archive_secs:,.0f} jobs/s); beanstalkd holds {proxied_jobs:,} jobs in "
          f"{proxied_rss:,.0f} MiB RSS ({proxied_rss / direct_rss:.2f}x direct's)")
    stop(f)
    stop(b)

    # 3. archive throughput per store
    for kind in STORES:
        b, port = beanstalkd()
        store = store_url(kind, tmp, "stores")
        f, fport = fanout(port, store, "--archive-after", "3h")
        started = time.time()
        put_all(fport, STORE_JOBS, far_share=1.0, seed=2)
        secs = wait_archived_count(store, port, 0, started)
        print(f"store {kind:8}: {STORE_JOBS:,} jobs archived in {secs:.1f}s "
              f"({STORE_JOBS / secs:,.0f} jobs/s)")
        stop(f)
        stop(b)
    drop_tables()

    # 4. re-injection lag
    if LAG_JOBS == 0:
        return
    b, port = beanstalkd()
    store = store_url("sqlite", tmp, "lag")
    f, fport = fanout(port, store, "--archive-after", "2s", "--reinject-lead", "1s",
                      "--reinject-every", "100ms")
    s = socket.create_connection(("127.0.0.1", fport))
    due = {}
    for i in range(LAG_JOBS):
        delay = 4 + i % 4
        body = b"lag%09d" % i
        s.sendall(b"put 1 %d 60 %d\r\n%s\r\n" % (delay, len(body), body))
        got = b""
        while not got.endswith(b"\r\n"):
            got += s.recv(100)
        due[body] = time.time() + delay
    s.close()
    w = socket.create_connection(("127.0.0.1", port))
    lags = []
    buf = b""
    while len(lags) < LAG_JOBS:
        w.sendall(b"reserve-with-timeout 20\r\n")
        while True:
            head, sep, rest = buf.partition(b"\r\n")
            if sep and head.startswith(b"RESERVED"):
                _, jid, n = head.split()
                if len(rest) >= int(n) + 2:
                    body, buf = rest[:int(n)], rest[int(n) + 2:]
                    break
            elif sep and head == b"TIMED_OUT":
                sys.exit(f"only {len(lags)} of {LAG_JOBS} jobs came back")
            buf += w.recv(65536)
        lags.append(time.time() - due[body])
        w.sendall(b"delete %s\r\n" % jid)
        while b"\r\n" not in buf:
            buf += w.recv(65536)
        buf = buf.split(b"\r\n", 1)[1]
    lags.sort()
    pct = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
    print(f"re-injection: {LAG_JOBS} jobs ready vs due: p50 {pct(0.5) * 1000:+.0f} ms, "
          f"p99 {pct(0.99) * 1000:+.0f} ms, max {lags[-1] * 1000:+.0f} ms "
          f"(beanstalkd counts delays in whole seconds)")
    stop(f)
    stop(b)


def wait_archived_count(store, port, near, started):
    """Seconds from `started` until the far-future jobs left beanstalkd for the store: none
    pending, and beanstalkd holding no more than `near` jobs (the near ones, never archived)."""
    while True:
        st = status(store)
        if st["pending"] == 0 and st["archived"] > 0 and stats(port) <= near:
            return time.time() - started
        if time.time() - started > 900:
            sys.exit(f"archiving did not catch up: {st}, beanstalkd holds {stats(port)}")
        time.sleep(0.2)


if __name__ == "__main__":
    try:
        main()
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
