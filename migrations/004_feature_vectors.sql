-- Feature snapshots of any declared spec: one row per (spec fingerprint,
-- snapshot time, user) with the values in the spec's order as an array, so
-- a team's own features.toml needs no schema change. Replaces the wide
-- `user_features` table (003), which fits only the standard spec and is no
-- longer written. Float32, as in every snapshot store.
CREATE TABLE IF NOT EXISTS churn.feature_vectors
(
    fingerprint    String,
    as_of          DateTime,
    user_id        UInt64,
    feature_values Array(Float32)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(as_of)
ORDER BY (fingerprint, as_of, user_id)
