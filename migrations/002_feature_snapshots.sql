-- One row per feature snapshot; written after its user rows, so a snapshot
-- is visible to serving only once complete.
CREATE TABLE IF NOT EXISTS churn.feature_snapshots
(
    as_of         DateTime,
    created_at    DateTime,
    fingerprint   String,
    feature_names String,
    users         UInt64
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY as_of
