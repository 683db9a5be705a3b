-- The ledger of streamed writes: one row per (topic, partition) per batch,
-- written *before* the batch's events are inserted. A batch whose offsets
-- overlap no range here cannot have been stored (no lookup needed: the
-- steady state); one that overlaps was at least begun, so its stored
-- positions are read back from `events` and those records skipped.
CREATE TABLE IF NOT EXISTS churn.log_ranges
(
    topic        String,
    partition    Int32,
    first_offset Int64,
    last_offset  Int64,
    records      UInt64,
    begun_at     DateTime DEFAULT now()
)
ENGINE = MergeTree
ORDER BY (topic, partition, first_offset)
