-- Rows taken out of `events` without a NIP-09 tombstone: versions replaced by a newer
-- one, and versions removed by an address (`a`) deletion. Other nodes' caches follow
-- this log so they never keep serving such a version, even when the newer version
-- itself never reaches them (deleted or expired before their poll).
CREATE TABLE removed (
    id          bytea       NOT NULL,
    seq         bigserial   NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX removed_feed ON removed (inserted_at, seq);
