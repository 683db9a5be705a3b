-- Rejected records counted per source (file, stdin, http, kafka,
-- generator) and field at fault, one row per ingested batch with rejects;
-- `churn stats` sums them. The rejected records themselves go to the
-- rejects file or the dead-letter topic.
CREATE TABLE IF NOT EXISTS churn.reject_counts
(
    source      String,
    field       String,
    count       UInt64,
    example     String,
    recorded_at DateTime DEFAULT now()
)
ENGINE = MergeTree
ORDER BY (source, field, recorded_at)
