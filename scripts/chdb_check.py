#!/usr/bin/env python3
"""Runs churn's ClickHouse SQL on a modern engine and on the real server.

Users run modern ClickHouse; the test server is Debian's 18.16. This script
takes the SQL the binary generates (`churn render-sql`: migrations, the
feature snapshot INSERT ... SELECT and the training-set query), runs it on
chDB (ClickHouse 26.x in-process) and on the 18.16 server over HTTP with the
same sample events, and compares the results row by row.

Runs twice: the standard spec with inactivity churn, then a spec with every
aggregation kind (tests/fixtures/every_aggregation.toml) with explicit churn
events and activity types.

Usage: chdb_check.py churn-binary CLICKHOUSE_URL WORKDIR   (exit 1 on mismatch)
"""
import json
import os
import subprocess
import sys
import urllib.request

os.environ["TZ"] = "UTC"  # chDB uses the process timezone for DateTime text
from chdb import session  # noqa: E402

churn, url, work = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
os.makedirs(work, exist_ok=True)
DB = "churn_chdb_check"
AS_OF, CUTOFF = "2026-05-01 00:00:00", "2026-04-01 00:00:00"

events_file = os.path.join(work, "events.ndjson")
subprocess.run([churn, "generate-events", "--users", "150", "--seed", "4", "--end",
                "2026-05-20 00:00:00", "--out", events_file], check=True, capture_output=True)
rows = [json.loads(line) for line in open(events_file)]
# Edge cases: exactly at T, at T+H, unknown type, no session, one old event.
rows += [
    {"user_id": 90001, "event_time": AS_OF, "event_type": "login", "session_id": "x"},
    {"user_id": 90002, "event_time": "2025-10-01 10:00:00", "event_type": "view"},
    {"user_id": 90003, "event_time": "2026-04-30 10:00:00", "event_type": "webinar", "session_id": "w"},
    {"user_id": 90003, "event_time": "2026-04-30 10:05:00", "event_type": "purchase", "amount": 12.5},
    {"user_id": 90004, "event_time": "2026-03-31 12:00:00", "event_type": "login", "session_id": "c"},
    {"user_id": 90004, "event_time": "2026-05-01 00:00:00", "event_type": "login", "session_id": "c"},
    {"user_id": 90005, "event_time": "2026-03-30 08:00:00", "event_type": "purchase", "amount": 3.5},
    {"user_id": 90005, "event_time": "2026-04-03 09:00:00", "event_type": "cancel"},
    {"user_id": 90006, "event_time": "2026-03-20 08:00:00", "event_type": "login"},
    {"user_id": 90006, "event_time": "2026-03-25 08:00:00", "event_type": "cancel"},
    {"user_id": 90007, "event_time": "2026-03-31 08:00:00", "event_type": "purchase"},
    {"user_id": 90007, "event_time": "2026-04-10 08:00:00", "event_type": "cancel"},
    {"user_id": 90007, "event_time": "2026-04-12 08:00:00", "event_type": "purchase", "amount": 1.0},
]
for i, r in enumerate(rows):
    r["event_id"] = i + 1
    r.setdefault("session_id", None)
    r.setdefault("amount", None)
insert_body = "\n".join(json.dumps(r) for r in rows)


def render(config):
    args = [churn] + (["--config", config] if config else []) + [
        "render-sql", "--database", DB, "--as-of", AS_OF, "--cutoff", CUTOFF]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


insert_sql = f"INSERT INTO {DB}.events (event_id, user_id, event_time, event_type, session_id, amount) FORMAT JSONEachRow"
snapshot_select = f"SELECT user_id, feature_values FROM {DB}.feature_vectors ORDER BY user_id FORMAT JSONEachRow"

def server(sql, body=None):
    data = (sql + ("\n" + body if body else "")).encode()
    with urllib.request.urlopen(urllib.request.Request(url + "/", data=data), timeout=60) as r:
        return r.read().decode()


def run_server(rendered):
    server(f"DROP DATABASE IF EXISTS {DB}")
    server(f"CREATE DATABASE {DB}")
    for m in rendered["migrations"]:
        server(m["sql"])
    server(insert_sql, insert_body)
    server(rendered["build_snapshot"])
    out = (server(snapshot_select), server(rendered["training_set"] + " FORMAT JSONEachRow"))
    server(f"DROP DATABASE IF EXISTS {DB}")
    return out


def run_chdb(rendered, tag):
    s = session.Session(os.path.join(work, "chdb-" + tag))
    s.query(f"DROP DATABASE IF EXISTS {DB}")
    s.query(f"CREATE DATABASE {DB}")
    for m in rendered["migrations"]:
        s.query(m["sql"])
    s.query(insert_sql + "\n" + insert_body)
    s.query(rendered["build_snapshot"])
    return str(s.query(snapshot_select)), str(s.query(rendered["training_set"] + " FORMAT JSONEachRow"))


def parse(text):
    # 18.16 quotes 64-bit integers in JSON, modern servers do not: normalise.
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    for r in rows:
        r["user_id"] = int(r["user_id"])
        if "churned" in r:
            r["churned"] = int(r["churned"])
    return rows


def close(name, a, b):
    a, b = float(a), float(b)
    tol = 1e-6 * max(1.0, abs(a)) if ("amount" in name or "spend" in name) else 1e-6 * max(1e-30, abs(a))
    return abs(a - b) <= tol


def check(tag, config):
    rendered = render(config)
    names = rendered["feature_names"]
    old_snap, old_train = map(parse, run_server(rendered))
    new_snap, new_train = map(parse, run_chdb(rendered, tag))
    problems = []
    if [r["user_id"] for r in old_snap] != [r["user_id"] for r in new_snap]:
        problems.append(f"snapshot users differ: {len(old_snap)} vs {len(new_snap)}")
    else:
        for a, b in zip(old_snap, new_snap):
            for n, x, y in zip(names, a["feature_values"], b["feature_values"]):
                if not close(n, x, y):
                    problems.append(f"user {a['user_id']} {n}: 18.16 {x} vs modern {y}")
    if [(r["user_id"], r["churned"]) for r in old_train] != [(r["user_id"], r["churned"]) for r in new_train]:
        problems.append("training users or labels differ")
    else:
        for a, b in zip(old_train, new_train):
            for n, x, y in zip(names, a["features"], b["features"]):
                if not close(n, x, y):
                    problems.append(f"training user {a['user_id']} {n}: 18.16 {x} vs modern {y}")
    print(f"chdb check [{tag}]: {len(old_snap)} snapshot rows x {len(names)} features and "
          f"{len(old_train)} training rows compared between ClickHouse 18.16 and chDB {version}")
    if len(old_snap) < 100 or not any(r["churned"] for r in old_train):
        problems.append("too little data compared to mean anything")
    for p in problems[:20]:
        print("MISMATCH", p)
    return len(problems)


version = str(session.Session().query("SELECT version()", "CSV")).strip()
custom = os.path.join(work, "custom.toml")
with open(custom, "w") as f:
    f.write(f"""[features]
spec_file = "{os.path.abspath("tests/fixtures/every_aggregation.toml")}"
[training]
churn_event_types = ["cancel"]
activity_event_types = ["login", "purchase", "view"]
""")
def check_cluster_mode():
    """What clickhouse.cluster mode sends, on the modern engine: its DDL
    parses (EXPLAIN AST; chDB has no cluster or ZooKeeper to run it on) and
    the settings it relies on or the README names exist."""
    s = session.Session(os.path.join(work, "chdb-cluster"))
    rendered = render(None)
    problems, statements = [], 0
    for m in rendered["cluster_migrations"]:
        for stmt in m["statements"]:
            statements += 1
            try:
                s.query("EXPLAIN AST " + stmt)
            except Exception as e:  # noqa: BLE001 - report every failure
                problems.append(f"{m['name']}: {str(e).splitlines()[0][:200]}")
    for setting in ["insert_distributed_sync = 1", "insert_deduplication_token = 'x'",
                    "async_insert = 1", "distributed_product_mode = 'local'"]:
        try:
            s.query("SET " + setting)
        except Exception as e:  # noqa: BLE001
            problems.append(f"SET {setting}: {str(e).splitlines()[0][:200]}")
    print(f"chdb check [cluster mode]: {statements} ON CLUSTER statements parsed by chDB {version}, "
          f"settings checked")
    for p in problems:
        print("MISMATCH", p)
    return len(problems)


failed = check("standard", None) + check("every-aggregation", custom) + check_cluster_mode()
if failed:
    print(f"{failed} mismatches")
    sys.exit(1)
print("chdb check: identical results (0 mismatches)")
