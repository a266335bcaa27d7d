-- The crawl's memory of the follower and follow lists it read (streams.stages.crawler): which
-- edges it has seen, so a later read emits FollowObserved only for new edges and FollowLost for
-- edges gone from a list read whole. A crawl migration (crawl set, see 0002_crawl.sql).

CREATE TABLE crawl_edges (
    owner     text        NOT NULL,
    direction text        NOT NULL CHECK (direction IN ('followers', 'follows')),
    other     text        NOT NULL,
    seen_at   timestamptz NOT NULL,
    PRIMARY KEY (owner, direction, other)
);
COMMENT ON TABLE crawl_edges IS
    'Per account and list (followers: who follows owner; follows: whom owner follows), the accounts the crawl last saw in it.';
