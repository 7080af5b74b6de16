-- The tags -> events foreign key cost every insert a check of the event row per tag row,
-- with a row lock on the event (one more write of its heap page and WAL record). Tag
-- rows are written only in their event's transaction, and only for the events that
-- insert inserted (write.rs), so the reference holds by construction. What the key's
-- ON DELETE CASCADE did is kept by one statement trigger: each statement that deletes
-- events deletes their tag rows once, over the rows it removed. `check` counts tag rows
-- without their event (`orphan_tags`).
ALTER TABLE tags DROP CONSTRAINT IF EXISTS tags_event_id_fkey;

CREATE FUNCTION layer2_tags_follow_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tags t USING gone g WHERE t.event_id = g.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_take_their_tags AFTER DELETE ON events
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION layer2_tags_follow_events();
