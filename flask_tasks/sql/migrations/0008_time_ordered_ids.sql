-- Version 8: tasks inserted without an id get a time-ordered (version 7) UUID instead of a
-- random one, as the API's own ids are (enqueue.new_ids). Every update of a task adds an entry to
-- the primary key next to the old one; with random ids the tasks of one claim were spread over as
-- many index pages as tasks, with these they share a few. The ids already stored stay as they are.
-- The version bits: gen_random_uuid() sets 0100 (4), bits 52 and 53 make it 0111 (7).

CREATE FUNCTION flask_tasks_new_id() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
        52, 1), 53, 1), 'hex')::uuid
$$;

ALTER TABLE tasks ALTER COLUMN id SET DEFAULT flask_tasks_new_id();
