-- Crawls as a user starts them (`bge crawl ...`): what was asked, which requests belong to it,
-- and whether it was cancelled, so `bge crawl status` and `bge crawl cancel` have something to
-- read and write. A crawl migration (crawl set, see 0002_crawl.sql).

CREATE TABLE crawls (
    id           text        PRIMARY KEY,
    kind         text        NOT NULL,
    args         jsonb       NOT NULL,
    requested_at timestamptz NOT NULL,
    cancelled_at timestamptz
);
COMMENT ON TABLE crawls IS
    'One row per crawl started from the command line; its id is its first request''s id (a snowball''s StartSnowball).';

CREATE TABLE crawl_members (
    crawl_id   text NOT NULL REFERENCES crawls (id),
    request_id text NOT NULL,
    subject    text,
    PRIMARY KEY (crawl_id, request_id)
);
CREATE INDEX crawl_members_request ON crawl_members (request_id);
COMMENT ON TABLE crawl_members IS
    'The requests of each crawl: those the command sent, and the follow-ups (a snowball''s expansions) the crawler sent. '
    '`subject`: the account of a profile request (EnrichProfile is recorded in crawl_profiles, not crawl_requests).';

ALTER TABLE crawl_requests ADD COLUMN found integer NOT NULL DEFAULT 0;
ALTER TABLE crawl_requests ADD COLUMN pages integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN crawl_requests.found IS 'Accounts the request kept (candidates, or profiles fetched).';
COMMENT ON COLUMN crawl_requests.pages IS 'XRPC pages the request read.';
