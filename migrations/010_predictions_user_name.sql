-- Batch scores of users with string ids carry the id as sent (empty for
-- integer ids, whose `user_id` is the id itself), for BI joins on it.
ALTER TABLE churn.predictions
    ADD COLUMN user_name String DEFAULT ''
