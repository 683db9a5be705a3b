#!/usr/bin/env python3
"""Prints the configuration reference table of README.md from config.toml
(key, default, environment variable, the comment above the key).
tests/deploy.rs checks that README.md holds every row it prints."""
import re, tomllib
text = open('config.toml').read()
rows = []; section = ''; comments = []
for line in text.splitlines():
    s = line.strip()
    if s.startswith('#'):
        comments.append(s.lstrip('#').strip()); continue
    m = re.match(r'^\[(.+)\]$', s)
    if m:
        section = m.group(1); comments = []; continue
    m = re.match(r'^([a-z0-9_]+)\s*=\s*(.+)$', s)
    if m:
        key, val = m.group(1), m.group(2)
        path = f"{section}.{key}" if section else key
        env = "CHURN_" + "__".join(p.upper() for p in path.split('.'))
        desc = ' '.join(comments).replace('|', '\\|')
        rows.append(f"| `{path}` | `{val}` | `{env}` | {desc} |")
        comments = []
    elif not s:
        comments = []
print("| key | default | environment | meaning |\n|---|---|---|---|")
print('\n'.join(rows))
