#!/usr/bin/env python3
"""Checks deploy/prometheus/churn.rules.yml and deploy/grafana/churn.json
against a real churn server's /metrics, and the dashboard's shape.

- every `churn_*` metric an expression names (alert, recording rule or
  dashboard panel) is a family in METRICS (a scrape of /metrics), histogram
  suffixes mapped to their family; a name may be missing only when listed
  in ABSENT_OK with the test that checks it instead;
- every recording rule a panel uses is defined in the rules file;
- the dashboard has a uid, a title, unique panel ids, a grid position and
  at least one Prometheus target per panel on the provisioned datasource,
  and every panel expression parses (promtool check rules on a rules file
  made of them).

Usage: check_dashboards.py METRICS_FILE   (exit 1 on any finding)
"""
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "deploy/prometheus/churn.rules.yml")
DASHBOARD = os.path.join(ROOT, "deploy/grafana/churn.json")
DATASOURCES = os.path.join(ROOT, "deploy/grafana/provisioning/datasources/prometheus.yml")
# Series a `churn demo` cannot have, and where they are checked instead.
ABSENT_OK = {
    "churn_kafka_consumer_lag": "needs a Kafka consumer: tests/kafka/main.rs asserts the series",
}
NAME = re.compile(r"\bchurn_[a-z0-9_]+\b")
RECORDED = re.compile(r"\bchurn:[a-z0-9_:]+\b")

metrics_text = open(sys.argv[1]).read()
families = set()
for line in metrics_text.splitlines():
    if line.startswith("# TYPE "):
        families.add(line.split()[2])
    elif line and not line.startswith("#"):
        families.add(re.split(r"[{ ]", line, maxsplit=1)[0])


def family(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            return name[: -len(suffix)]
    return name


rules_text = open(RULES).read()
# Expressions only (comments and annotations may name anything).
rule_exprs = []
lines = rules_text.splitlines()
i = 0
while i < len(lines):
    m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
    if m:
        indent, first = len(m.group(1)), m.group(2)
        block = [] if first in ("|", ">") else [first]
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            block.append(lines[i].strip())
            i += 1
        rule_exprs.append(" ".join(block))
        continue
    i += 1
recorded = set(re.findall(r"^\s*- record:\s*(\S+)", rules_text, re.M))

dash = json.load(open(DASHBOARD))
provisioned = re.findall(r"uid:\s*(\S+)", open(DATASOURCES).read())
problems = []
for key in ("uid", "title", "panels", "schemaVersion"):
    if key not in dash:
        problems.append(f"dashboard lacks {key}")
ids = [p.get("id") for p in dash.get("panels", [])]
if len(ids) != len(set(ids)):
    problems.append("dashboard panel ids repeat")
panel_exprs = []
for p in dash.get("panels", []):
    where = f"panel {p.get('id')} ({p.get('title')!r})"
    if not all(k in p.get("gridPos", {}) for k in ("x", "y", "w", "h")):
        problems.append(f"{where}: no full gridPos")
    targets = p.get("targets", [])
    if not targets:
        problems.append(f"{where}: no targets")
    for t in targets:
        ds = t.get("datasource", p.get("datasource", {}))
        if ds.get("type") != "prometheus" or ds.get("uid") not in provisioned:
            problems.append(f"{where}: datasource {ds} is not the provisioned Prometheus {provisioned}")
        if not t.get("expr"):
            problems.append(f"{where}: a target without expr")
        panel_exprs.append((where, t.get("expr", "")))

# Every panel expression parses: promtool checks them as recording rules.
with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for n, (_, e) in enumerate(panel_exprs):
        f.write(f"      - record: dashboard:panel{n}\n        expr: {json.dumps(e)}\n")
    tmp = f.name
out = subprocess.run(["promtool", "check", "rules", tmp], capture_output=True, text=True)
os.unlink(tmp)
if out.returncode != 0:
    problems.append("dashboard expressions do not parse: " + (out.stdout + out.stderr).strip())

checked = set()
for where, expr in [("rules", e) for e in rule_exprs] + panel_exprs:
    for name in NAME.findall(expr):
        checked.add(name)
        if family(name) not in families and name not in ABSENT_OK:
            problems.append(f"{where}: {name} is not in /metrics")
    for rec in RECORDED.findall(expr):
        if rec not in recorded:
            problems.append(f"{where}: recording rule {rec} is not defined in churn.rules.yml")
print(f"dashboards: {len(rule_exprs)} rule and {len(panel_exprs)} panel expressions, "
      f"{len(checked)} metric names checked against /metrics "
      f"({', '.join(sorted(n for n in checked if n in ABSENT_OK))} checked elsewhere)")
for p in problems:
    print("PROBLEM", p)
sys.exit(1 if problems else 0)
