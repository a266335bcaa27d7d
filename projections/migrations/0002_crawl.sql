-- The crawl's bookkeeping (streams.stages.crawl): what was fetched and done, kept in the crawl's
-- own schema (settings.crawl_schema, ``bge_crawl`` by default), never in a projection schema:
-- a rebuild swaps projection schemas away, and growth actions must never repeat. A crawl
-- migration (its name starts with ``crawl``) is applied only to crawl schemas, see
-- projections.migrate. ``IF NOT EXISTS`` adopts the tables that workers before this migration
-- created themselves.

CREATE TABLE IF NOT EXISTS crawl_profiles (
    did         text        PRIMARY KEY,
    fetched_at  timestamptz NOT NULL,
    request_id  text        NOT NULL
);
COMMENT ON TABLE crawl_profiles IS
    'When each account''s profile was last fetched, and by which crawl request.';

CREATE TABLE IF NOT EXISTS crawl_requests (
    id          text        PRIMARY KEY,
    kind        text        NOT NULL,
    status      text        NOT NULL,
    detail      text,
    finished_at timestamptz NOT NULL
);
COMMENT ON TABLE crawl_requests IS
    'Crawl requests executed, and how they ended (done, failed, skipped): a re-delivered request is skipped.';

CREATE TABLE IF NOT EXISTS crawl_discovered (
    crawl_id      text        NOT NULL,
    did           text        NOT NULL,
    degree        integer     NOT NULL,
    accepted      boolean     NOT NULL,
    reason        text        NOT NULL,
    discovered_at timestamptz NOT NULL,
    PRIMARY KEY (crawl_id, did)
);
COMMENT ON TABLE crawl_discovered IS
    'The accounts each snowball crawl judged (none twice per crawl), and whether it kept them.';

CREATE TABLE IF NOT EXISTS growth_actions (
    action      text        NOT NULL,
    subject     text        NOT NULL,
    subject_did text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'done', 'failed', 'unknown')),
    reason      text        NOT NULL,
    record_uri  text,
    error       text,
    attempts    integer     NOT NULL DEFAULT 1,
    planned_at  timestamptz NOT NULL,
    taken_at    timestamptz,
    PRIMARY KEY (action, subject)
);
CREATE INDEX IF NOT EXISTS growth_actions_planned ON growth_actions (action, planned_at);
COMMENT ON TABLE growth_actions IS
    'Every growth action, at most once per (action, subject): pending (claimed, outcome unknown yet), '
    'done, failed (refused by the service: may be retried) or unknown (no answer: never retried).';
