-- The operator's rulings (NIP-86 bans, allow-lists and relay settings), shared by every
-- node. `list` and `subject` are `eventstore::Ruling::encode()`; `note` is the reason or
-- a setting's value.
CREATE TABLE rulings (
    list    smallint NOT NULL,
    subject bytea    NOT NULL,
    note    text     NOT NULL DEFAULT '',
    PRIMARY KEY (list, subject)
);
-- One row: bumped by every change (in the changing transaction), so nodes poll one
-- number to learn whether to reload the rulings; its row lock also serialises changes.
CREATE TABLE rulings_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint  NOT NULL
);
INSERT INTO rulings_version (one, version) VALUES (true, 0);
