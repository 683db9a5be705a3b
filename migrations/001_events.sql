-- Raw events. ReplacingMergeTree on the full key: a redelivered event has
-- the same (user_id, event_time, event_id) and collapses on merge; readers
-- use FINAL so duplicates never count before the merge either.
CREATE TABLE IF NOT EXISTS churn.events
(
    user_id     UInt64,
    event_time  DateTime,
    event_id    Int64,
    event_type  String,
    session_id  Nullable(String),
    amount      Nullable(Float64),
    inserted_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (user_id, event_time, event_id)
