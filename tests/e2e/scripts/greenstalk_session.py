"""Every beanstalkd command through greenstalk, the real Python client, against the server at
HOST:PORT (argv[1], argv[2]); prints one line per step: what the client got back (a value, or the
exception greenstalk raised). Run against a proxy and against a fresh server directly, the two
transcripts must be equal. Fields that depend on time or the process (ages, pids, uptime,
counters of other connections) are left out."""

import sys

import greenstalk

host, port = sys.argv[1], int(sys.argv[2])
out = []


def step(name, f):
    try:
        r = f()
    except Exception as e:  # greenstalk raises one class per error answer
        r = "raised " + type(e).__name__
    if isinstance(r, greenstalk.Job):
        r = ("job", r.id, r.body)
    out.append(f"{name}: {r!r}")
    return r


STABLE_JOB = ("id", "tube", "state", "pri", "delay", "ttr", "reserves", "releases", "buries", "kicks")
STABLE_TUBE = ("name", "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved",
               "current-jobs-delayed", "current-jobs-buried", "total-jobs", "cmd-delete")


def pick(d, keys):
    return {k: d[k] for k in keys if k in d}


c = greenstalk.Client((host, port), encoding=None, use="work", watch=["work"])
step("using", c.using)
step("put a", lambda: c.put(b"a\r\nbody\x00binary", priority=10, ttr=30))
step("put b", lambda: c.put(b"b", priority=5, delay=0, ttr=60))
step("put delayed", lambda: c.put(b"later", delay=3000, ttr=60))
step("peek-ready", c.peek_ready)
step("peek-delayed", c.peek_delayed)
step("stats-tube", lambda: pick(c.stats_tube("work"), STABLE_TUBE))
j = step("reserve", lambda: c.reserve(timeout=1))
step("stats-job", lambda: pick(c.stats_job(j[1]), STABLE_JOB))
step("touch", lambda: c.touch(greenstalk.Job(j[1], j[2])))
step("release", lambda: c.release(greenstalk.Job(j[1], j[2]), priority=1, delay=0))
j = step("reserve again", lambda: c.reserve(timeout=1))
step("bury", lambda: c.bury(greenstalk.Job(j[1], j[2]), priority=7))
step("peek-buried", c.peek_buried)
step("kick", lambda: c.kick(10))
step("kick-job delayed", lambda: c.kick_job(3))
step("peek 1", lambda: c.peek(1))
step("peek missing", lambda: c.peek(999))
step("delete missing", lambda: c.delete(999))
step("watch other", lambda: c.watch("other"))
step("ignore other", lambda: c.ignore("other"))
step("ignore last", lambda: c.ignore("work"))
step("tubes", lambda: sorted(c.tubes()))
step("watching", lambda: sorted(c.watching()))
step("use bad name", lambda: c.use("-bad"))
step("pause-tube", lambda: c.pause_tube("work", 0))
for i in range(3):
    j = step(f"reserve {i}", lambda: c.reserve(timeout=0))
    if isinstance(j, tuple):
        step(f"delete {i}", lambda: c.delete(j[1]))
step("reserve empty", lambda: c.reserve(timeout=0))
step("put too big", lambda: c.put(b"x" * 70000))
step("stats keys", lambda: sorted(c.stats().keys()))
c.close()
print("\n".join(out))
