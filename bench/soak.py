#!/usr/bin/env python3
"""Soak run of a live churn server (bench/soak.sh starts it): a fixed rate
of /predict calls, a batch of events posted every second and a retrain
every minute, for DURATION seconds. Prints error counts, latency and the
server's RSS over time (start, end, peak). Standard library only; prints
figures, never passes or fails on time."""
import http.client, json, os, random, sys, threading, time

base, pid, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
duration = float(os.environ.get("DURATION", "600"))
rate = float(os.environ.get("RATE", "200"))  # /predict per second
users = int(os.environ.get("USERS", "2000"))
host, port = base.removeprefix("http://").split(":")
stop_at = time.monotonic() + duration
lock = threading.Lock()
stats = {"predict": 0, "events": 0, "retrain": 0, "errors": 0}
errors = []
latencies = []


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def note(kind, status, data, ok=(200,)):
    with lock:
        stats[kind] += 1
        if status not in ok:
            stats["errors"] += 1
            if len(errors) < 20:
                errors.append(f"{kind}: {status} {data[:200]!r}")


def predictor(share):
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    interval = share / rate
    next_at = time.monotonic()
    while time.monotonic() < stop_at:
        next_at += interval
        user = random.randint(1, users)
        t = time.perf_counter()
        try:
            status, data = request(conn, "POST", f"/predict?user_id={user}")
        except Exception as e:  # a dropped connection is an error too
            status, data = 0, str(e).encode()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
        with lock:
            latencies.append(time.perf_counter() - t)
        # 404: a generated id that has no events yet is a valid answer.
        note("predict", status, data, ok=(200, 404))
        time.sleep(max(0.0, next_at - time.monotonic()))


def poster():
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    n = 0
    while time.monotonic() < stop_at:
        now = int(time.time())
        lines = []
        for _ in range(500):
            n += 1
            lines.append(json.dumps({"user_id": random.randint(1, users), "event_time": now - random.randint(0, 3600),
                                     "event_type": random.choice(["login", "view", "purchase"]),
                                     "session_id": f"soak-{n // 20}", "amount": round(random.random() * 50, 2)}))
        try:
            status, data = request(conn, "POST", "/events", "\n".join(lines))
        except Exception as e:
            status, data = 0, str(e).encode()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
        note("events", status, data)
        time.sleep(1.0)


def retrainer():
    auth = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < stop_at:
        # A new connection per call, as a cron client makes: the server
        # closes keep-alive connections idle past header_read_timeout_secs,
        # and http.client would not notice before sending on a closed one.
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            status, data = request(conn, "POST", "/admin/retrain", headers=auth)
        except Exception as e:
            status, data = 0, str(e).encode()
        conn.close()
        # 409: the previous retrain is still running (one at a time).
        note("retrain", status, data, ok=(202, 409))
        time.sleep(60)


workers = 4
threads = [threading.Thread(target=predictor, args=(workers,)) for _ in range(workers)]
threads += [threading.Thread(target=poster), threading.Thread(target=retrainer)]
start_rss = rss_kib()
for t in threads:
    t.start()
samples = [(0, start_rss)]
t0 = time.monotonic()
while time.monotonic() < stop_at:
    time.sleep(min(30, max(0.1, stop_at - time.monotonic())))
    samples.append((round(time.monotonic() - t0), rss_kib()))
for t in threads:
    t.join()
end_rss = rss_kib()
latencies.sort()
p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0
print(f"soak: {duration:.0f} s at {rate:.0f} predict/s, 500 events/s posted, a retrain every 60 s")
print(f"requests: {stats['predict']} predict, {stats['events']} event posts, {stats['retrain']} retrains; errors: {stats['errors']}")
print(f"predict latency: p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {p(1.0):.1f} ms")
print(f"server RSS: start {start_rss / 1024:.1f} MiB, end {end_rss / 1024:.1f} MiB, "
      f"peak {max(r for _, r in samples) / 1024:.1f} MiB")
print("RSS over time (s: MiB): " + ", ".join(f"{s}: {r / 1024:.0f}" for s, r in samples))
for e in errors:
    print("error:", e)
