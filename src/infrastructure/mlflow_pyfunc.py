"""churn's model as an MLflow `python_function` model (loader module).

Shipped with every version churn exports to MLflow (the `code/` directory of
the logged model), so that

    model = mlflow.pyfunc.load_model("models:/churn_model@production")
    model.predict(df)   # df: the feature spec's columns, one row per user

returns the churn probability `/predict` serves for the same feature values.
Pure Python (no native library): the gradient-boosted trees (forust's JSON),
the standardised logistic regression (bounds, log1p, means, scales), their
blend and the calibration are evaluated here with the same float64
operations in the same order as churn's Rust code, so results agree to
rounding (the test command checks 1e-9 against /predict/batch).

Inputs are rounded to float32 first, as churn's feature snapshots store
them, and leaf weights are read as the float32 values forust keeps.
"""
import json
import math
import struct

_F32_MAX = 3.4028234663852886e38


def _f32(x):
    """The float32 nearest to x, as a float (Rust's `x as f32`)."""
    if math.isnan(x):
        return x
    if abs(x) > _F32_MAX:
        # Beyond the largest float32 it rounds to it until half an ulp
        # past it, then to infinity; churn's features never get there.
        return math.copysign(math.inf, x)
    return struct.unpack("f", struct.pack("f", x))[0]


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def _logit(p):
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


class _Trees:
    """forust's GradientBooster: base score plus one leaf per tree, in log-odds."""

    def __init__(self, file):
        booster = file["booster"]
        self.base = float(booster["base_score"])
        self.trees = []
        for tree in booster["trees"]:
            nodes = []
            for n in tree["nodes"]:
                nodes.append((
                    bool(n["is_leaf"]),
                    int(n["split_feature"]),
                    float(n["split_value"]),
                    int(n["left_child"]),
                    int(n["right_child"]),
                    int(n["missing_node"]),
                    # forust keeps leaf weights as f32: its JSON prints the
                    # shortest decimal of that f32, read back exactly here.
                    _f32(float(n["weight_value"])),
                ))
            self.trees.append(nodes)
        iterations = booster.get("prediction_iteration")
        if iterations is not None:
            self.trees = self.trees[:iterations]

    def probability(self, row):
        total = self.base
        for nodes in self.trees:
            i = 0
            while True:
                leaf, feature, split, left, right, missing, weight = nodes[i]
                if leaf:
                    total += weight
                    break
                v = row[feature]
                if math.isnan(v):
                    i = missing
                elif v < split:
                    i = left
                else:
                    i = right
        return _sigmoid(total)


class _Logistic:
    """Standardised logistic regression on clamped, optionally log1p'd inputs."""

    def __init__(self, m):
        self.coefficients = [float(c) for c in m["coefficients"]]
        self.intercept = float(m["intercept"])
        self.means = [float(v) for v in m["means"]]
        self.scales = [float(v) for v in m["scales"]]
        self.log1p = [bool(v) for v in m.get("log1p", [])]
        self.bounds = [(float(lo), float(hi)) for lo, hi in m.get("bounds", [])]

    def _transform(self, j, x):
        if j < len(self.bounds):
            lo, hi = self.bounds[j]
            if lo <= hi and not math.isnan(x):
                x = min(max(x, lo), hi)
        if j < len(self.log1p) and self.log1p[j]:
            return math.log1p(max(x, 0.0) if not math.isnan(x) else 0.0)
        return x

    def probability(self, row):
        z = 0.0
        for j, c in enumerate(self.coefficients):
            z += c * (self._transform(j, row[j]) - self.means[j]) / self.scales[j]
        return _sigmoid(self.intercept + z)


class _Blend:
    def __init__(self, file):
        self.gbdt = _Trees(file["gbdt"])
        self.logistic = _Logistic(file["logistic"])
        self.weight = float(file["weight"])

    def probability(self, row):
        g = self.gbdt.probability(row)
        lg = self.logistic.probability(row)
        return _sigmoid(self.weight * _logit(g) + (1.0 - self.weight) * _logit(lg))


def _calibrate(calibration, raw):
    if not calibration:
        return raw
    method = calibration["method"]
    if method == "platt":
        p = _sigmoid(calibration["a"] * _logit(raw) + calibration["b"])
    elif method == "isotonic":
        xs, ys = calibration["thresholds"], calibration["values"]
        n = min(len(xs), len(ys))
        if n == 0:
            p = raw
        elif raw <= xs[0]:
            p = ys[0]
        elif raw >= xs[n - 1]:
            p = ys[n - 1]
        else:
            hi = next(i for i in range(n) if xs[i] > raw)
            lo = hi - 1
            span = xs[hi] - xs[lo]
            p = ys[hi] if span <= 0.0 else ys[lo] + (ys[hi] - ys[lo]) * (raw - xs[lo]) / span
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    return min(max(p, 1e-6), 1.0 - 1e-6)


class ChurnModel:
    """What `mlflow.pyfunc.load_model` returns (wrapped by MLflow)."""

    def __init__(self, spec):
        self.version = spec["version"]
        self.kind = spec["kind"]
        self.feature_names = list(spec["feature_names"])
        self.calibration = spec.get("calibration")
        model = spec["model"]
        if self.kind == "gbdt":
            self.model = _Trees(model)
        elif self.kind == "logistic":
            self.model = _Logistic(model)
        elif self.kind == "blend":
            self.model = _Blend(model)
        else:
            raise ValueError(f"unknown model kind {self.kind!r}")

    def predict(self, model_input, params=None):
        """Churn probabilities (calibrated), one per row of `model_input`:
        a pandas DataFrame with the spec's feature columns (any order;
        extra columns are ignored)."""
        import pandas as pd

        missing = [c for c in self.feature_names if c not in model_input.columns]
        if missing:
            raise ValueError(f"model_input lacks feature columns {missing}")
        values = model_input[self.feature_names].astype("float64").values.tolist()
        out = []
        for row in values:
            row = [_f32(v) for v in row]
            out.append(_calibrate(self.calibration, self.model.probability(row)))
        return pd.Series(out, index=model_input.index, name="churn_probability")


def _load_pyfunc(data_path):
    """MLflow's entry point: `data_path` is the model's `churn_model.json`."""
    with open(data_path) as f:
        return ChurnModel(json.load(f))
