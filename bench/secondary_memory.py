#!/usr/bin/env python3
"""The secondaries' shared memory cap, measured: N clients at once upload M MiB each through
`fanout duplex` whose secondary accepts and never reads. Each secondary may hold up to its budget
(--secondary-budget, 4 MiB) once the kernel's socket buffers toward it are full, so without a cap
the proxy holds about N x 3-4 MiB; --secondary-memory caps what all of them hold together. Prints
the proxy's peak RSS against cap + 64 MiB, how many clients got their whole upload to the primary,
and what became of the secondaries; exits 1 if the bound was passed or a client was not served.

    python3 bench/secondary_memory.py [--fanout target/release/fanout] [--sessions 1000] [--mib 7]
                                      [--cap 256MiB] [--budget 4MiB] [--compare]

--compare runs the same load a second time without the cap (--secondary-memory 1048576GiB), to
show what the cap saves; that run's RSS grows with --sessions (about 2 GB for 1,000).
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1 << 20


def backends(ready):
    """The primary and the secondary, in a process of their own (so the clients' threads do not
    slow the primary down): one selector loop. The primary reads every connection to EOF and
    answers with the byte count; the secondary accepts and never reads."""
    import selectors

    sel = selectors.DefaultSelector()
    listeners = {}
    for role in ("primary", "secondary"):
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", 0))
        lst.listen(4096)
        lst.setblocking(False)
        sel.register(lst, selectors.EVENT_READ, role)
        listeners[role] = lst.getsockname()[1]
    ready.send(listeners)
    held = []
    counts = {}
    buf = bytearray(1 << 20)
    while True:
        for key, _ in sel.select():
            if key.data in ("primary", "secondary"):
                while True:
                    try:
                        conn, _ = key.fileobj.accept()
                    except BlockingIOError:
                        break
                    if key.data == "secondary":
                        held.append(conn)  # never read
                    else:
                        conn.setblocking(False)
                        counts[conn] = 0
                        sel.register(conn, selectors.EVENT_READ, "upload")
            else:
                conn = key.fileobj
                try:
                    n = conn.recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError:
                    n = 0
                if n:
                    counts[conn] += n
                    continue
                sel.unregister(conn)
                conn.setblocking(True)
                try:
                    conn.sendall(f"ok {counts.pop(conn)}\n".encode())
                except OSError:
                    pass
                conn.close()


def rss_kib(pid, field="VmRSS:"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def run(opts, cap):
    """One load against one fanout (and backends of its own); returns the peak RSS in KiB, the
    clients served, the secondaries' outcomes and the seconds the uploads took."""
    import multiprocessing

    parent, child = multiprocessing.Pipe()
    peers = multiprocessing.Process(target=backends, args=(child,), daemon=True)
    peers.start()
    ports = parent.recv()
    primary, secondary = ports["primary"], ports["secondary"]
    report = tempfile.NamedTemporaryFile(prefix="fanout-report-", suffix=".jsonl", delete=False)
    report.close()
    proc = subprocess.Popen(
        [
            opts.fanout, "duplex", "--listen", "127.0.0.1:0",
            "--primary", f"127.0.0.1:{primary}", "--secondary", f"127.0.0.1:{secondary}",
            "--secondary-memory", cap, "--secondary-deadline", "1s", "--report", report.name,
        ] + (["--secondary-budget", opts.budget] if opts.budget else []),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise SystemExit(f"fanout did not start: {line!r}")
        port = int(line.rsplit(":", 1)[1])
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        total = opts.mib * MIB
        chunk = b"x" * MIB
        served = [0]
        lock = threading.Lock()
        start = threading.Barrier(opts.sessions)

        def client():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
                    start.wait()
                    sent = 0
                    while sent < total:
                        s.sendall(chunk)
                        sent += len(chunk)
                    s.shutdown(socket.SHUT_WR)
                    if s.makefile().readline().strip() == f"ok {total}":
                        with lock:
                            served[0] += 1
            except (OSError, threading.BrokenBarrierError) as e:
                print(f"a client failed: {e}", file=sys.stderr)

        started = time.perf_counter()
        clients = [threading.Thread(target=client) for _ in range(opts.sessions)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        elapsed = time.perf_counter() - started
        # Every session ends at the latest a second after its primary (the secondary deadline).
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            with open(report.name) as f:
                lines = [l for l in f if l.endswith("\n")]
            if len(lines) >= opts.sessions:
                break
            time.sleep(0.1)
        done.set()
        sampler.join()
        peak_kib = max(peak[0], rss_kib(proc.pid, "VmHWM:"))
        outcomes = {}
        for l in lines:
            for b in json.loads(l)["backends"]:
                if b["role"] == "secondary":
                    outcomes[b["outcome"]] = outcomes.get(b["outcome"], 0) + 1
        return peak_kib, served[0], outcomes, elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        peers.terminate()
        peers.join()
        os.unlink(report.name)


def parse_mib(text):
    units = {"kib": 1 / 1024, "mib": 1, "gib": 1024}
    t = text.strip().lower()
    for u, f in units.items():
        if t.endswith(u):
            return float(t[: -len(u)]) * f
    return int(t) / MIB


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fanout", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "fanout"))
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--mib", type=int, default=7)
    ap.add_argument("--cap", default="256MiB")
    ap.add_argument("--budget", default=None, help="--secondary-budget (default: fanout's, 4MiB)")
    ap.add_argument("--compare", action="store_true")
    opts = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * opts.sessions + 256  # this script holds 3 per session, fanout (inheriting it) 3
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"need {need} descriptors, the hard limit is {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    threading.stack_size(512 * 1024)
    runs = [opts.cap] + (["1048576GiB"] if opts.compare else [])
    print(f"{opts.sessions} clients upload {opts.mib} MiB each at once; the secondary never reads")
    print(f"{'--secondary-memory':>20} {'peak RSS':>10} {'cap + 64 MiB':>13} {'served':>11} {'time':>7}  secondaries")
    failed = False
    for cap in runs:
        peak_kib, served, outcomes, elapsed = run(opts, cap)
        bound = parse_mib(cap) + 64
        capped = cap == opts.cap
        within = peak_kib / 1024 < bound
        if capped and (not within or served < opts.sessions):
            failed = True
        shown = "none" if not capped else cap
        bound_text = f"{bound:.0f} MiB" if capped else "-"
        summary = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        print(f"{shown:>20} {peak_kib / 1024:>7.0f} MiB {bound_text:>13} {served:>5}/{opts.sessions:<5} {elapsed:>6.1f}s  {summary}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
