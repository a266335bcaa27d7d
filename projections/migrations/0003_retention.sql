-- Retention (projections.retention): the ledgers, dead letters and hourly gains age out by their
-- time columns, pruned in bounded batches by the worker's leader and by `bge projections prune`.
COMMENT ON TABLE follow_events IS
    'Follows stored and follows undone (kind follow / unfollow), keyed by the domain event id: it keeps follower_gains_hourly exact when events are re-delivered, and answers who followed or unfollowed whom when. Rows older than BGE_RETENTION_DAYS are pruned (projections.retention).';
COMMENT ON TABLE activity_events IS
    'One row per ActivityRecorded, keyed by the domain event id: it makes the accumulated activity_patterns immune to re-delivered events, and serves recent activity and events per minute. Rows older than BGE_RETENTION_DAYS are pruned (projections.retention).';
