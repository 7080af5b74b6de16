-- layer2 schema. Runs under sqlx's migration lock, so nodes starting together on an
-- empty database serialise here.

-- Every stored event. `json` is the compact NIP-01 object, served as is.
CREATE TABLE events (
    id          bytea       PRIMARY KEY,
    pubkey      bytea       NOT NULL,
    created_at  bigint      NOT NULL,
    kind        integer     NOT NULL,
    -- Address key (kind, pubkey, d) of replaceable/addressable events: the `d` value,
    -- hashed when long (btree entries are limited to ~2.7 kB); NULL for other kinds.
    d_key       bytea,
    expiration  bigint,
    json        text        NOT NULL,
    -- The change feed: database clock at insert, and a tie-breaker.
    seq         bigserial   NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Canonical order is created_at DESC, id ASC. Each index serves one filter shape and
-- ends in that order, so a scan yields rows ready to serve and stops at the limit.
CREATE INDEX events_created     ON events (created_at DESC, id);
CREATE INDEX events_pubkey      ON events (pubkey, created_at DESC, id);
CREATE INDEX events_kind        ON events (kind, created_at DESC, id);
CREATE INDEX events_pubkey_kind ON events (pubkey, kind, created_at DESC, id);
CREATE INDEX events_feed        ON events (inserted_at, seq);
CREATE INDEX events_expiration  ON events (expiration) WHERE expiration IS NOT NULL;
-- One event per address. Writers serialise on an advisory lock per address first; this
-- is the backstop that makes a second winner impossible.
CREATE UNIQUE INDEX events_address ON events (kind, pubkey, d_key) WHERE d_key IS NOT NULL;

-- Single-letter tags, for `#x` filters. `value_key` is the value's bytes, or for values
-- over 256 bytes 0xff followed by their sha256 (0xff never occurs in UTF-8).
CREATE TABLE tags (
    event_id   bytea   NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    name       "char"  NOT NULL,
    value_key  bytea   NOT NULL,
    created_at bigint  NOT NULL
);
-- Unique, and in canonical order within one value (constraints cannot say DESC).
CREATE UNIQUE INDEX tags_key ON tags (name, value_key, created_at DESC, event_id);
CREATE INDEX tags_event ON tags (event_id);

-- NIP-09 tombstones: (id, author) pairs refused from now on, and the feed of deletions
-- for other nodes' caches.
CREATE TABLE deleted_ids (
    id          bytea       NOT NULL,
    pubkey      bytea       NOT NULL,
    seq         bigserial   NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (id, pubkey)
);
CREATE INDEX deleted_ids_feed ON deleted_ids (inserted_at, seq);

-- NIP-09 `a` deletions: every version of an address up to `upto` is refused.
CREATE TABLE deleted_addresses (
    kind   integer NOT NULL,
    pubkey bytea   NOT NULL,
    d_key  bytea   NOT NULL,
    upto   bigint  NOT NULL,
    PRIMARY KEY (kind, pubkey, d_key)
);
