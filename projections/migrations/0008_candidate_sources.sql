-- Where each candidate decision came from: the Kafka coordinates of the source event
-- (Source.topic/partition/offset), so the dashboard's event journey and `bge replay` can go
-- from "why is this account a candidate" to the event itself. NULL for decisions made before.
ALTER TABLE candidates ADD COLUMN source_topic text;
ALTER TABLE candidates ADD COLUMN source_partition integer;
ALTER TABLE candidates ADD COLUMN source_offset bigint;
