-- Where a streamed event was read: Kafka topic, partition and offset
-- (defaults for events from files, HTTP and the generator). With
-- `log_ranges` (007) this lets a redelivered Kafka record be recognised by
-- its position instead of by looking its event id up in the whole table.
ALTER TABLE churn.events
    ADD COLUMN log_topic String DEFAULT '',
    ADD COLUMN log_partition Int32 DEFAULT -1,
    ADD COLUMN log_offset Int64 DEFAULT -1
