#!/usr/bin/env bash
# Installs (PyPI, cached venv, idempotent) what executes
# notebooks/explore_churn.ipynb headless for tests/notebook.rs:
# nbconvert + ipykernel and the notebook's own imports.
# Usage: scripts/notebook.sh [install|jupyter]   (jupyter: prints the binary)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
VENV="$CHURN_CACHE_DIR/venv-notebook"
if [ "${1:-install}" = jupyter ]; then echo "$VENV/bin/jupyter"; exit 0; fi
venv "$VENV" nbconvert==7.16.6 nbclient==0.10.2 ipykernel==6.29.5 \
  pandas==2.2.3 matplotlib==3.9.4 requests==2.32.3 boto3==1.35.99
"$VENV/bin/jupyter" nbconvert --version >/dev/null
echo "notebook: nbconvert $("$VENV/bin/jupyter" nbconvert --version) in $VENV"
