#!/usr/bin/env python3
"""Idle sessions: what 10,000 open, silent connections cost `fanout relay` in memory.

N clients (--sessions, 10,000) connect through `fanout relay` (--fanout, target/release/fanout)
to a backend that accepts every connection and holds it (one selector loop in a process of its
own, counting what it accepted). Once the backend has accepted all N (every session established
end to end) and none of the client sockets was closed, the script reads the proxy's VmRSS from
/proc/PID/status, prints it with the RSS before the first connection, the growth per session,
the anonymous part of the RSS (RssAnon: heap and stacks, not the mapped binary) and VmHWM, and
fails (exit 1) if fanout's VmRSS passes --max-rss (32 MiB).

    python3 bench/idle.py                              # fanout relay, 10,000 sessions, limit 32 MiB
    python3 bench/idle.py --compare                    # the same against haproxy and nginx stream
    python3 bench/idle.py --sessions 20000 --max-rss 64MiB --fanout-args "--max-connections 20000"

--compare runs HAProxy (mode tcp, nbthread 1) and nginx's stream proxy (one worker; the worker's
RSS is the one shown) through the same load; they are shown for comparison and do not fail the
run. The script raises its descriptor limit (the proxy inherits it: 2 per session), which above
the hard limit needs root. Python 3.11, standard library only.
"""
import argparse
import multiprocessing
import os
import resource
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def backend(ready, accepted):
    """Accept every connection and hold it, never reading; count them in `accepted`."""
    sel = selectors.DefaultSelector()
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    lst.setblocking(False)
    sel.register(lst, selectors.EVENT_READ)
    ready.send(lst.getsockname()[1])
    held = []
    while True:
        for _key, _ in sel.select():
            while True:
                try:
                    conn, _ = lst.accept()
                except BlockingIOError:
                    break
                held.append(conn)
                with accepted.get_lock():
                    accepted.value += 1


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def parse_mib(text):
    t = text.strip().lower()
    for unit, factor in (("kib", 1 / 1024), ("mib", 1), ("gib", 1024), ("m", 1)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * factor
    return float(t)  # a bare number is MiB


def wait_listening(proc, port, name, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited at startup (status {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not listen on 127.0.0.1:{port} within {timeout}s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fanout(opts, backend_port, work):
    args = [opts.fanout, "relay", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{backend_port}"]
    if opts.sessions > 10000:  # fanout's default --max-connections
        args += ["--max-connections", str(opts.sessions)]
    args += shlex.split(opts.fanout_args)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(os.path.join(work, "fanout.err"), "w"),
                            text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        err = open(os.path.join(work, "fanout.err")).read()[-400:]
        raise SystemExit(f"fanout did not start ({' '.join(args)}): {line!r} {err}")
    return proc, int(line.rsplit(":", 1)[1]), proc.pid, " ".join(["relay"] + args[6:]) or "relay"


def start_haproxy(opts, backend_port, work):
    port = free_port()
    cfg = os.path.join(work, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    nbthread 1
    maxconn {opts.sessions + 10}
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend idle
    bind 127.0.0.1:{port}
    default_backend origin
backend origin
    server origin 127.0.0.1:{backend_port} maxconn {opts.sessions + 10}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "haproxy.err"), "w"))
    wait_listening(proc, port, "haproxy")
    return proc, port, proc.pid, "mode tcp, nbthread 1"


def start_nginx_stream(opts, backend_port, work):
    port = free_port()
    conf = os.path.join(work, "nginx-stream.conf")
    with open(conf, "w") as f:
        f.write(f"""load_module {STREAM_MODULE};
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx-stream.pid;
error_log {work}/nginx-stream-error.log warn;
events {{ worker_connections {2 * opts.sessions + 16}; }}
stream {{
    access_log off;
    server {{ listen 127.0.0.1:{port}; proxy_pass 127.0.0.1:{backend_port}; }}
}}
""")
    proc = subprocess.Popen(["nginx", "-p", work, "-c", conf, "-e", f"{work}/nginx-stream-error.log"],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "nginx.err"), "w"))
    wait_listening(proc, port, "nginx-stream")
    worker = None
    deadline = time.monotonic() + 5
    while worker is None and time.monotonic() < deadline:
        kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
        if len(kids) == 1:
            worker = int(kids[0])
        else:
            time.sleep(0.1)
    if worker is None:
        proc.kill()
        raise SystemExit("nginx-stream: no single worker process")
    return proc, port, worker, "1 worker (its RSS)"


def run(opts, name, starter, work):
    """One proxy, a fresh backend: returns (rss_before_kib, rss_kib, hwm_kib, seconds to connect)."""
    parent, child = multiprocessing.Pipe()
    accepted = multiprocessing.Value("i", 0)
    peer = multiprocessing.Process(target=backend, args=(child, accepted), daemon=True)
    peer.start()
    backend_port = parent.recv()
    proc, port, pid, how = starter(opts, backend_port, work)
    clients = []
    try:
        time.sleep(0.3)
        before = status_kib(pid, "VmRSS:")
        started = time.monotonic()
        for i in range(opts.sessions):
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))
            except OSError as e:
                raise SystemExit(f"{name}: client {i + 1} of {opts.sessions} could not connect: {e}")
        deadline = time.monotonic() + opts.timeout
        while accepted.value < opts.sessions:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: the backend accepted {accepted.value} of {opts.sessions} "
                                 f"connections within {opts.timeout}s")
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited (status {proc.returncode})")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        time.sleep(opts.settle)
        # A session the proxy closed shows as a readable (EOF) client socket.
        sel = selectors.DefaultSelector()
        for s in clients:
            sel.register(s, selectors.EVENT_READ)
        closed = len(sel.select(timeout=0))
        sel.close()
        if closed:
            raise SystemExit(f"{name}: {closed} of {opts.sessions} client connections were closed or got bytes")
        rss = status_kib(pid, "VmRSS:")
        anon = status_kib(pid, "RssAnon:")
        hwm = status_kib(pid, "VmHWM:")
        print(f"{name:>14} {how:<32} {before / 1024:>8.1f} MiB {rss / 1024:>8.1f} MiB "
              f"{(rss - before) * 1024 / opts.sessions / 1024:>7.2f} KiB {anon / 1024:>8.1f} MiB "
              f"{hwm / 1024:>8.1f} MiB {elapsed:>6.1f}s", flush=True)
        return before, rss, hwm, elapsed
    finally:
        # Clients and backend first, so every session has ended when the proxy is asked to stop
        # (fanout drains open sessions for up to --drain-timeout).
        for s in clients:
            s.close()
        peer.terminate()
        peer.join()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fanout", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target",
                                                     "release", "fanout"))
    ap.add_argument("--fanout-args", default="", help="extra arguments for fanout relay")
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--max-rss", default="32MiB", help="fanout's VmRSS limit (default 32MiB)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds for the backend to see every session")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading the RSS")
    ap.add_argument("--compare", action="store_true", help="also haproxy and nginx stream (not checked)")
    opts = ap.parse_args()
    limit_mib = parse_mib(opts.max_rss)
    if not os.access(opts.fanout, os.X_OK):
        raise SystemExit(f"no fanout binary at {opts.fanout} (cargo build --release -p fanout-io, or --fanout)")

    # This process holds one descriptor per session, the backend (forked from it) one, the proxy
    # (inheriting the limit) two, plus its listener, epoll, stdio and the like.
    need = 2 * opts.sessions + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))  # needs CAP_SYS_RESOURCE
            except (ValueError, OSError):
                raise SystemExit(
                    f"{opts.sessions} sessions need {need} descriptors in the proxy (2 per session), but the "
                    f"hard limit is {hard} (ulimit -Hn) and this process may not raise it (no CAP_SYS_RESOURCE); "
                    f"raise it (ulimit -Hn {need} as root) or run --sessions {(hard - 64) // 2}") from None
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    proxies = [("fanout relay", start_fanout)]
    if opts.compare:
        if shutil.which("haproxy"):
            proxies.append(("haproxy", start_haproxy))
        else:
            print("(haproxy not installed: skipped)")
        if shutil.which("nginx") and os.path.exists(STREAM_MODULE):
            proxies.append(("nginx stream", start_nginx_stream))
        else:
            print(f"(nginx or {STREAM_MODULE} not installed: nginx stream skipped)")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"{opts.sessions} idle sessions, established end to end; fanout's VmRSS limit {limit_mib:g} MiB")
    print(f"{'proxy':>14} {'':<32} {'RSS before':>12} {'RSS idle':>12} {'/session':>11} {'of it anon':>12} "
          f"{'VmHWM':>12} {'connect':>7}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="fanout-idle-") as work:
        os.chmod(work, 0o755)
        for name, starter in proxies:
            results[name] = run(opts, name, starter, work)
    rss_mib = results["fanout relay"][1] / 1024
    if rss_mib > limit_mib:
        print(f"FAIL: fanout relay's VmRSS with {opts.sessions} idle sessions is {rss_mib:.1f} MiB, "
              f"over {limit_mib:g} MiB")
        sys.exit(1)
    print(f"ok: fanout relay's VmRSS with {opts.sessions} idle sessions is {rss_mib:.1f} MiB "
          f"(limit {limit_mib:g} MiB)")


if __name__ == "__main__":
    main()
