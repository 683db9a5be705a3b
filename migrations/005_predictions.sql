-- Batch scores written by `churn score` in ClickHouse mode, for BI joins
-- with `events` and `feature_vectors`: one row per (snapshot time, model
-- version, user). Re-scoring the same snapshot with the same version
-- replaces its rows (ReplacingMergeTree on the key, newest `scored_at`).
-- `reasons` is the top contributions as JSON
-- (`[{"feature":..,"value":..,"contribution":..}]`, log-odds), empty `[]`
-- when not asked for.
CREATE TABLE IF NOT EXISTS churn.predictions
(
    features_as_of    DateTime,
    model_version     UInt64,
    user_id           UInt64,
    scored_at         DateTime,
    churn_probability Float64,
    raw_probability   Float64,
    reasons           String
)
ENGINE = ReplacingMergeTree(scored_at)
PARTITION BY toYYYYMM(features_as_of)
ORDER BY (features_as_of, model_version, user_id)
