-- 0001: the whole projection schema.
--
-- Applied by projections.migrate with search_path set to the target schema: no name here is
-- schema-qualified, so the same file builds the live schema, a test's scratch schema or a rebuild.
--
-- Conventions
-- * Every record row is keyed by its at-uri (or, for rows derived from one post, by the post's
--   at-uri plus a position), so a re-delivered event can never insert a second row.
-- * Counters are only ever changed by deltas computed from rows actually inserted or deleted in
--   the same transaction (INSERT ... ON CONFLICT DO NOTHING RETURNING / DELETE ... RETURNING).
-- * Times are taken from the events (Jetstream time_us, or a record's own createdAt when it
--   parses), never from the database clock, so re-applying events gives identical rows.
--   The only exceptions are bookkeeping columns: projection_offsets.updated_at and
--   dead_letters.recorded_at.
-- * There are no foreign keys: events arrive in any order (a like before its post, an unfollow of
--   a follow made before collection started), so every reference is a plain value.

-- --- bookkeeping ---------------------------------------------------------------------------

CREATE TABLE projection_offsets (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
COMMENT ON TABLE projection_offsets IS
    'High-water marks: the next Kafka offset each consumer will apply, written in the same transaction as the rows.';

CREATE TABLE dead_letters (
    consumer     text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    kafka_offset bigint      NOT NULL,
    code         text        NOT NULL,
    reason       text        NOT NULL,
    payload      bytea       NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition, kafka_offset)
);
CREATE INDEX dead_letters_recorded_at ON dead_letters (recorded_at);
COMMENT ON TABLE dead_letters IS
    'Messages the projector could not apply, with their original bytes and why; their offsets still advance.';

-- --- accounts ------------------------------------------------------------------------------

CREATE TABLE users (
    did                         text        PRIMARY KEY,
    handle                      text,
    identity_seq                bigint,
    display_name                text,
    description                 text,
    pronouns                    text,
    website                     text,
    avatar_cid                  text,
    banner_cid                  text,
    joined_via_starter_pack_uri text,
    pinned_post_uri             text,
    profile_created_at          timestamptz,
    profile_updated_at          timestamptz,
    avatar_url                  text,
    banner_url                  text,
    account_created_at          timestamptz,
    appview_followers_count     bigint,
    appview_follows_count       bigint,
    appview_posts_count         bigint,
    appview_labels              text[],
    appview_fetched_at          timestamptz,
    active                      boolean,
    status                      text,
    status_seq                  bigint,
    first_seen_at               timestamptz,
    last_seen_at                timestamptz,
    follower_count              bigint      NOT NULL DEFAULT 0,
    follow_count                bigint      NOT NULL DEFAULT 0,
    post_count                  bigint      NOT NULL DEFAULT 0,
    likes_received              bigint      NOT NULL DEFAULT 0,
    reposts_received            bigint      NOT NULL DEFAULT 0,
    replies_received            bigint      NOT NULL DEFAULT 0,
    quotes_received             bigint      NOT NULL DEFAULT 0,
    strategies                  text[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX users_handle ON users (lower(handle));
CREATE INDEX users_follower_count ON users (follower_count DESC);
CREATE INDEX users_engagement_received
    ON users ((likes_received + reposts_received + replies_received + quotes_received) DESC);
COMMENT ON TABLE users IS
    'One row per account seen acting or referenced. *_count and *_received are observed edges (accumulated, never overwritten); appview_* are the AppView''s own totals at appview_fetched_at (ProfileEnriched, replaced by each fetch); first/last_seen come from UserSeen; strategies are those that selected the account.';

-- --- posts and engagement ------------------------------------------------------------------

CREATE TABLE posts (
    uri              text        PRIMARY KEY,
    did              text        NOT NULL,
    rkey             text        NOT NULL,
    cid              text,
    text             text        NOT NULL,
    created_at       timestamptz,
    created_at_raw   text        NOT NULL,
    indexed_at       timestamptz NOT NULL,
    updated_at       timestamptz,
    reply_root_uri   text,
    reply_parent_uri text,
    quote_uri        text,
    embed_kind       text,
    langs            text[]      NOT NULL DEFAULT '{}',
    labels           text[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX posts_did_indexed_at ON posts (did, indexed_at DESC);
CREATE INDEX posts_indexed_at ON posts (indexed_at);
COMMENT ON COLUMN posts.created_at IS 'The record''s createdAt when it parses (client-supplied, may be anything).';
COMMENT ON COLUMN posts.indexed_at IS 'When the firehose carried the create (Jetstream time_us).';

CREATE TABLE engagement_counts (
    subject_uri        text   PRIMARY KEY,
    subject_did        text   NOT NULL,
    subject_collection text   NOT NULL,
    like_count         bigint NOT NULL DEFAULT 0,
    repost_count       bigint NOT NULL DEFAULT 0,
    reply_count        bigint NOT NULL DEFAULT 0,
    quote_count        bigint NOT NULL DEFAULT 0
);
CREATE INDEX engagement_counts_subject_did ON engagement_counts (subject_did);
COMMENT ON TABLE engagement_counts IS
    'Likes, reposts, replies and quotes received by any record (usually a post), seen or not: most liked posts were written before collection started. Rows whose counts all return to zero are deleted.';

CREATE VIEW posts_with_counts AS
SELECT p.*,
       coalesce(e.like_count, 0)   AS like_count,
       coalesce(e.repost_count, 0) AS repost_count,
       coalesce(e.reply_count, 0)  AS reply_count,
       coalesce(e.quote_count, 0)  AS quote_count
FROM posts p
LEFT JOIN engagement_counts e ON e.subject_uri = p.uri;

CREATE TABLE likes (
    uri                text        PRIMARY KEY,
    did                text        NOT NULL,
    rkey               text        NOT NULL,
    subject_uri        text        NOT NULL,
    subject_did        text        NOT NULL,
    subject_collection text        NOT NULL,
    subject_cid        text,
    via_uri            text,
    created_at         timestamptz NOT NULL
);
CREATE INDEX likes_subject_uri ON likes (subject_uri);
CREATE INDEX likes_did ON likes (did, created_at DESC);

CREATE TABLE reposts (
    uri                text        PRIMARY KEY,
    did                text        NOT NULL,
    rkey               text        NOT NULL,
    subject_uri        text        NOT NULL,
    subject_did        text        NOT NULL,
    subject_collection text        NOT NULL,
    subject_cid        text,
    via_uri            text,
    created_at         timestamptz NOT NULL
);
CREATE INDEX reposts_subject_uri ON reposts (subject_uri);
CREATE INDEX reposts_did ON reposts (did, created_at DESC);

CREATE TABLE replies (
    uri        text        PRIMARY KEY,
    did        text        NOT NULL,
    parent_uri text        NOT NULL,
    parent_did text        NOT NULL,
    root_uri   text        NOT NULL,
    root_did   text        NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX replies_parent_uri ON replies (parent_uri);
CREATE INDEX replies_root_uri ON replies (root_uri);
COMMENT ON TABLE replies IS 'Reply edges (ReplyAdded); a reply counts on its parent once, and PostDeleted undoes it.';

CREATE TABLE quotes (
    uri         text        PRIMARY KEY,
    did         text        NOT NULL,
    subject_uri text        NOT NULL,
    subject_did text        NOT NULL,
    subject_cid text,
    created_at  timestamptz NOT NULL
);
CREATE INDEX quotes_subject_uri ON quotes (subject_uri);

-- --- social graph --------------------------------------------------------------------------

CREATE TABLE follows (
    uri         text        PRIMARY KEY,
    did         text        NOT NULL,
    rkey        text        NOT NULL,
    subject_did text        NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX follows_subject_did ON follows (subject_did, created_at DESC);
CREATE INDEX follows_did ON follows (did, created_at DESC);
COMMENT ON COLUMN follows.did IS 'The follower.';
COMMENT ON COLUMN follows.created_at IS 'When the firehose carried the follow (Jetstream time_us).';

CREATE TABLE blocks (
    uri         text        PRIMARY KEY,
    did         text        NOT NULL,
    rkey        text        NOT NULL,
    subject_did text        NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX blocks_subject_did ON blocks (subject_did);
CREATE INDEX blocks_did ON blocks (did);

CREATE TABLE follow_events (
    event_id    uuid        PRIMARY KEY,
    did         text        NOT NULL,
    subject_did text        NOT NULL,
    kind        text        NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX follow_events_subject_did ON follow_events (subject_did, occurred_at DESC);
CREATE INDEX follow_events_occurred_at ON follow_events (occurred_at);
COMMENT ON TABLE follow_events IS
    'Follows stored and follows undone (kind follow / unfollow), keyed by the domain event id: it keeps follower_gains_hourly exact when events are re-delivered, and answers who followed or unfollowed whom when. Prune old rows with projections.writer.prune_event_ledgers.';

CREATE TABLE follower_gains_hourly (
    did    text        NOT NULL,
    hour   timestamptz NOT NULL,
    gained bigint      NOT NULL DEFAULT 0,
    lost   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (did, hour)
);
CREATE INDEX follower_gains_hourly_hour ON follower_gains_hourly (hour);
COMMENT ON TABLE follower_gains_hourly IS
    'Follower gain events by the hour they happened: a follow stored adds to gained, an unfollow that deleted a stored follow adds to lost. A history, so a follow and its unfollow net to zero here rather than vanish.';

CREATE VIEW follower_gains_daily AS
SELECT did,
       date_trunc('day', hour, 'UTC') AS day,
       sum(gained)::bigint            AS gained,
       sum(lost)::bigint              AS lost,
       sum(gained - lost)::bigint     AS net
FROM follower_gains_hourly
GROUP BY did, date_trunc('day', hour, 'UTC');

-- --- lists, starter packs, feeds, threadgates, labelers ------------------------------------

CREATE TABLE lists (
    uri         text        PRIMARY KEY,
    did         text        NOT NULL,
    rkey        text        NOT NULL,
    name        text        NOT NULL,
    purpose     text        NOT NULL,
    description text,
    created_at  timestamptz,
    indexed_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX lists_did ON lists (did);

CREATE TABLE list_items (
    uri         text        PRIMARY KEY,
    did         text        NOT NULL,
    rkey        text        NOT NULL,
    list_uri    text        NOT NULL,
    subject_did text        NOT NULL,
    created_at  timestamptz,
    indexed_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX list_items_list_uri ON list_items (list_uri);
CREATE INDEX list_items_subject_did ON list_items (subject_did);

CREATE TABLE starter_packs (
    uri         text        PRIMARY KEY,
    did         text        NOT NULL,
    rkey        text        NOT NULL,
    name        text        NOT NULL,
    description text,
    list_uri    text        NOT NULL,
    feed_uris   text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz,
    indexed_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX starter_packs_did ON starter_packs (did);

CREATE TABLE feed_generators (
    uri                  text        PRIMARY KEY,
    did                  text        NOT NULL,
    rkey                 text        NOT NULL,
    service_did          text        NOT NULL,
    display_name         text        NOT NULL,
    description          text,
    accepts_interactions boolean,
    content_mode         text,
    created_at           timestamptz,
    indexed_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);
CREATE INDEX feed_generators_did ON feed_generators (did);

CREATE TABLE threadgates (
    uri            text        PRIMARY KEY,
    did            text        NOT NULL,
    rkey           text        NOT NULL,
    post_uri       text        NOT NULL,
    allow          text[],
    hidden_replies text[]      NOT NULL DEFAULT '{}',
    created_at     timestamptz,
    indexed_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX threadgates_post_uri ON threadgates (post_uri);
COMMENT ON COLUMN threadgates.allow IS 'NULL: everyone may reply; empty: nobody; else mention, follower, following, list:<at-uri> or an unknown rule''s $type.';

CREATE TABLE labeler_services (
    uri                 text        PRIMARY KEY,
    did                 text        NOT NULL,
    rkey                text        NOT NULL,
    label_values        text[]      NOT NULL DEFAULT '{}',
    reason_types        text[],
    subject_types       text[],
    subject_collections text[],
    created_at          timestamptz,
    indexed_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX labeler_services_did ON labeler_services (did);

-- --- post enrichment (replaced as a whole on each PostEnriched, removed by PostDeleted) -------

CREATE TABLE threads (
    post_uri   text        PRIMARY KEY,
    did        text        NOT NULL,
    root_uri   text        NOT NULL,
    root_did   text        NOT NULL,
    parent_uri text,
    parent_did text,
    depth      integer,
    indexed_at timestamptz NOT NULL
);
CREATE INDEX threads_root_uri ON threads (root_uri);

CREATE TABLE mentions (
    post_uri    text        NOT NULL,
    subject_did text        NOT NULL,
    did         text        NOT NULL,
    position    integer     NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (post_uri, subject_did)
);
CREATE INDEX mentions_subject_did ON mentions (subject_did, created_at DESC);

CREATE TABLE hashtags (
    post_uri   text        NOT NULL,
    tag        text        NOT NULL,
    did        text        NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (post_uri, tag)
);
CREATE INDEX hashtags_created_at ON hashtags (created_at);
CREATE INDEX hashtags_tag_created_at ON hashtags (tag, created_at);

CREATE TABLE links (
    post_uri   text        NOT NULL,
    position   integer     NOT NULL,
    did        text        NOT NULL,
    uri        text        NOT NULL,
    domain     text,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (post_uri, position)
);
CREATE INDEX links_domain ON links (domain, created_at);

CREATE TABLE media (
    post_uri   text        NOT NULL,
    position   integer     NOT NULL,
    did        text        NOT NULL,
    kind       text        NOT NULL,
    embed_type text        NOT NULL,
    cid        text,
    mime_type  text,
    size       bigint,
    alt        text,
    width      integer,
    height     integer,
    uri        text,
    domain     text,
    title      text,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (post_uri, position)
);
CREATE INDEX media_kind ON media (kind, created_at);

-- --- the engine's own actions ----------------------------------------------------------------

CREATE TABLE growth_actions (
    record_uri  text        PRIMARY KEY,
    did         text        NOT NULL,
    action      text        NOT NULL,
    subject_did text        NOT NULL,
    subject_uri text,
    reason      text        NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX growth_actions_subject_did ON growth_actions (subject_did, occurred_at DESC);
CREATE INDEX growth_actions_occurred_at ON growth_actions (occurred_at DESC);
COMMENT ON TABLE growth_actions IS 'What the engine''s own account did (follow, like), towards whom and why (GrowthActionTaken).';

-- --- activity ------------------------------------------------------------------------------

CREATE TABLE activity_events (
    event_id    uuid        PRIMARY KEY,
    did         text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    collection  text        NOT NULL,
    operation   text        NOT NULL
);
CREATE INDEX activity_events_did ON activity_events (did, occurred_at DESC);
CREATE INDEX activity_events_occurred_at ON activity_events (occurred_at);
COMMENT ON TABLE activity_events IS
    'One row per ActivityRecorded, keyed by the domain event id: it makes the accumulated activity_patterns immune to re-delivered events, and serves recent activity and events per minute. Prune old rows with projections.writer.prune_event_ledgers.';

CREATE TABLE activity_patterns (
    did         text        NOT NULL,
    iso_weekday smallint    NOT NULL,
    hour        smallint    NOT NULL,
    events      bigint      NOT NULL DEFAULT 0,
    last_at     timestamptz,
    PRIMARY KEY (did, iso_weekday, hour)
);
COMMENT ON TABLE activity_patterns IS 'Actions per author by ISO weekday (1 = Monday) and UTC hour, accumulated.';

-- --- growth --------------------------------------------------------------------------------

CREATE TABLE candidates (
    did           text             NOT NULL,
    strategy      text             NOT NULL,
    score         double precision NOT NULL,
    reasons       text[]           NOT NULL DEFAULT '{}',
    subject_uri   text,
    source_did    text             NOT NULL,
    first_seen_at timestamptz      NOT NULL,
    last_seen_at  timestamptz      NOT NULL,
    PRIMARY KEY (did, strategy)
);
CREATE INDEX candidates_strategy_score ON candidates (strategy, score DESC, did);
COMMENT ON TABLE candidates IS 'Accounts a strategy selected; the latest decision replaces score and reasons.';
