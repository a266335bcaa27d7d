-- Retention of the network's records (BGE_RETENTION_DAYS_RECORDS, off by default; see
-- projections.retention): posts, their engagement and their facets age out by the time the
-- firehose carried them. BRIN indexes: the rows arrive in time order, so a few pages of index
-- let the pruner find old rows without slowing the projector's inserts.
CREATE INDEX likes_created_brin ON likes USING brin (created_at);
CREATE INDEX reposts_created_brin ON reposts USING brin (created_at);
CREATE INDEX replies_created_brin ON replies USING brin (created_at);
CREATE INDEX quotes_created_brin ON quotes USING brin (created_at);
CREATE INDEX threads_indexed_brin ON threads USING brin (indexed_at);
CREATE INDEX mentions_created_brin ON mentions USING brin (created_at);
CREATE INDEX hashtags_created_brin ON hashtags USING brin (created_at);
CREATE INDEX links_created_brin ON links USING brin (created_at);
CREATE INDEX media_created_brin ON media USING brin (created_at);
