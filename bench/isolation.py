#!/usr/bin/env python3
"""Secondary isolation, measured: a 48 MiB upload through `fanout relay` and through `fanout duplex`
whose secondary accepts and never reads. Prints the median time of each and their ratio; the duplex
must not be slower than the relay by more than noise.

    python3 bench/isolation.py [--fanout target/release/fanout] [--mib 48] [--runs 7]
"""
import argparse
import os
import socket
import statistics
import subprocess
import threading
import time


def serve(handler):
    """Starts a loopback listener whose connections run `handler` in threads; returns its port."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)

    def accept_loop():
        while True:
            conn, _ = lst.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return lst.getsockname()[1]


def sink(conn):
    """Reads to EOF, then answers with the byte count."""
    total = 0
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        total += len(data)
    conn.sendall(f"ok {total}\n".encode())
    conn.close()


HELD = []


def never_reads(conn):
    HELD.append(conn)  # keep it open, never read


def start_fanout(binary, args):
    proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        raise SystemExit(f"fanout did not start: {line!r}")
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, int(port)


def upload(port, total):
    chunk = b"x" * (1 << 20)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        sent = 0
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        answer = s.makefile().readline().strip()
    elapsed = time.perf_counter() - started
    if answer != f"ok {total}":
        raise SystemExit(f"upload answered {answer!r}, expected 'ok {total}'")
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fanout", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "fanout"))
    ap.add_argument("--mib", type=int, default=48)
    ap.add_argument("--runs", type=int, default=7)
    opts = ap.parse_args()
    primary, secondary = serve(sink), serve(never_reads)
    relay, relay_port = start_fanout(opts.fanout, ["relay", "--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{primary}"])
    duplex, duplex_port = start_fanout(
        opts.fanout,
        ["duplex", "--listen", "127.0.0.1:0", "--primary", f"127.0.0.1:{primary}", "--secondary", f"127.0.0.1:{secondary}"],
    )
    try:
        total = opts.mib << 20
        times = {"relay": [], "duplex": []}
        for _ in range(opts.runs):  # interleaved, so drift in machine load hits both alike
            times["relay"].append(upload(relay_port, total))
            times["duplex"].append(upload(duplex_port, total))
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in ("relay", "duplex"):
            print(f"{k:<7} median {med[k] * 1000:8.1f} ms  ({opts.mib / med[k]:7.1f} MiB/s) over {opts.runs} runs")
        print(f"duplex (secondary never reads) / relay time: {med['duplex'] / med['relay']:.2f}x")
    finally:
        for p in (relay, duplex):
            p.terminate()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
