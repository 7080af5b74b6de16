-- Cluster maintenance (retention rules, NIP-40 expiry, log pruning) and wipes: one node
-- at a time runs maintenance, elected by a session advisory lock; `last_run` spaces the
-- runs whichever node takes them. What a node resuming its change feed from an old
-- cursor must know, since those rows may be gone:
-- - `log_horizon_us`: the shortest age beyond which a pruner removed rows of the
--   `removed` log (NULL: never pruned);
-- - `reset_at_us`: when the cluster's data was wiped (`nuke --all`; database clock in
--   microseconds; NULL: never). A cache synced before it holds nothing true.
CREATE TABLE maintenance (
    one            boolean     PRIMARY KEY DEFAULT true CHECK (one),
    last_run       timestamptz NOT NULL DEFAULT 'epoch',
    log_horizon_us bigint,
    reset_at_us    bigint
);
INSERT INTO maintenance (one) VALUES (true);
