#!/usr/bin/env bash
# Training benchmark: `churn train` (the whole command: point-in-time sets
# from the store, both fits, evaluation, calibration, drift reference,
# registration) against LightGBM's fit plus scikit-learn's logistic fit on
# exactly the same rows (`churn train --export-sets`), same machine, same
# run. LightGBM gets churn's GBDT settings (trees, depth, learning rate,
# min leaf weight, L2); scikit-learn the same preprocessing as churn's
# baseline (ln(1+x) of non-negative columns, standardised). Prints seconds
# and the ratio; passes or fails nothing.
#
# Usage: bench/train.sh   (env: USERS=8000, the generator's users; RUNS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
USERS="${USERS:-8000}"
RUNS="${RUNS:-2}"
VENV="$CHURN_CACHE_DIR/venv-bench-train"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import lightgbm, sklearn' 2>/dev/null; then
  echo "== installing lightgbm and scikit-learn into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q lightgbm==4.6.0 scikit-learn==1.6.1 numpy==2.2.6
fi
cargo build --release --locked --bin churn 2>&1 | tail -1
BIN="$CARGO_TARGET_DIR/release/churn"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export RUST_LOG=warn
churn() { "$BIN" --data-dir "$WORK/data" "$@"; }
echo "== preparing $USERS users of generated data"
churn generate-events --users "$USERS" --seed 7 --out "$WORK/events.ndjson" 2>/dev/null
churn ingest "$WORK/events.ndjson" >/dev/null
churn build-features >/dev/null
churn train --export-sets "$WORK/sets"

best_churn=""
for i in $(seq 1 "$RUNS"); do
  t0=$(date +%s.%N)
  churn train --json > "$WORK/train.json"
  secs=$(echo "$(date +%s.%N) - $t0" | bc)
  echo "churn train run $i: ${secs}s"
  if [ -z "$best_churn" ] || [ "$(echo "$secs < $best_churn" | bc)" = 1 ]; then best_churn=$secs; fi
done
python3 - "$WORK/train.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["phase_secs"]
print("churn phases (last run): " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
print(f"churn rows: {r['train_rows']} training, {r['validation_rows']} validation; "
      f"auc gbdt {r['gbdt_metrics']['auc']:.4f}, logistic {r['baseline_metrics']['auc']:.4f}")
PY
GBDT_PARAMS="$(churn check-config 2>/dev/null | python3 -c '
import json, sys
c = json.load(sys.stdin)["training"]["gbdt"]
print(c["iterations"], c["learning_rate"], c["max_depth"], c["min_leaf_weight"], c["l2"])')"
"$VENV/bin/python" - "$WORK/sets" "$RUNS" $GBDT_PARAMS <<'PY' > "$WORK/python.txt"
import sys, time
import numpy as np
import lightgbm as lgb
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
d, runs = sys.argv[1], int(sys.argv[2])
iters, lr, depth, min_leaf, l2 = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
def load(name):
    a = np.loadtxt(f"{d}/{name}", delimiter=",", skiprows=1)
    return a[:, 2:], a[:, 1]
X, y = load("train.csv"); Xv, yv = load("validation.csv")
def best(f):
    out = None
    for _ in range(runs):
        t = time.perf_counter(); m = f(); s = time.perf_counter() - t
        out = (s, m) if out is None or s < out[0] else out
    return out
params = dict(objective="binary", n_estimators=iters, learning_rate=lr, max_depth=depth,
              num_leaves=2 ** depth, min_child_weight=min_leaf, reg_lambda=l2,
              min_child_samples=1, verbose=-1)
lgb_s, lgbm = best(lambda: lgb.LGBMClassifier(**params).fit(X, y))
lgb1_s, _ = best(lambda: lgb.LGBMClassifier(n_jobs=1, **params).fit(X, y))
nonneg = (X >= 0).all(axis=0)
def prep(A):
    A = A.copy(); A[:, nonneg] = np.log1p(A[:, nonneg]); return A
Xp = prep(X); mu, sd = Xp.mean(0), Xp.std(0); sd[sd < 1e-6] = 1.0
Xs, Xvs = (Xp - mu) / sd, (prep(Xv) - mu) / sd
lr_s, lrm = best(lambda: LogisticRegression(max_iter=1000).fit(Xs, y))
print(lgb_s, lgb1_s, lr_s,
      roc_auc_score(yv, lgbm.predict_proba(Xv)[:, 1]), roc_auc_score(yv, lrm.predict_proba(Xvs)[:, 1]),
      X.shape[0], X.shape[1])
PY
read -r lgb_s lgb1_s lr_s lgb_auc lr_auc rows cols < "$WORK/python.txt"
base=$(echo "$lgb_s + $lr_s" | bc -l)
printf '%-44s %9s\n' "on $rows rows x $cols features (best of $RUNS)" seconds
printf '%-44s %9.2f\n' "churn train (whole command)" "$best_churn"
printf '%-44s %9.2f   (auc %.4f)\n' "LightGBM fit, all cores" "$lgb_s" "$lgb_auc"
printf '%-44s %9.2f\n' "LightGBM fit, 1 thread" "$lgb1_s"
printf '%-44s %9.2f   (auc %.4f)\n' "scikit-learn LogisticRegression fit" "$lr_s" "$lr_auc"
printf 'churn train / (LightGBM + scikit-learn fits): %.2f (target <= 1.5)\n' "$(echo "$best_churn / $base" | bc -l)"
