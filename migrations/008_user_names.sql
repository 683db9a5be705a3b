-- Names of users sent with string ids (UUIDs, "u-abc"): the events and
-- every other table key users by a 64-bit key, which for a name is bit 62
-- plus the first 62 bits of SHA-256 of the name (src/domain/user.rs). This
-- table turns keys back into names for answers, scores and exports, and
-- lets ingestion refuse a second name on a key (a hash collision) instead
-- of merging two users. Integer ids are their own keys and have no row.
CREATE TABLE IF NOT EXISTS churn.user_names
(
    user_key UInt64,
    name     String
)
ENGINE = ReplacingMergeTree
ORDER BY user_key
