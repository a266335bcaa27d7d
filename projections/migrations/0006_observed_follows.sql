-- The social graph as the crawl observed it (FollowObserved / FollowLost, see domain.crawl), next
-- to `follows`, which holds the follows the firehose showed being made. An observed edge has no
-- record uri and no time of its own: it gives the graph a base (older follows), counts among an
-- account's observed followers, and its loss (a list read whole without it) is an unfollow in
-- `follow_events` and `follower_gains_hourly`. A firehose unfollow of the same pair forgets it.

CREATE TABLE observed_follows (
    did         text        NOT NULL,
    subject_did text        NOT NULL,
    observed_at timestamptz NOT NULL,
    event_id    uuid        NOT NULL,
    PRIMARY KEY (did, subject_did)
);
CREATE INDEX observed_follows_subject ON observed_follows (subject_did);
COMMENT ON COLUMN observed_follows.did IS 'The follower.';
COMMENT ON COLUMN observed_follows.observed_at IS 'When a crawl first saw the edge (the follow is at least this old).';
