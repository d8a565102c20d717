-- Version 3: wake idle handlers at once when tasks are inserted (LISTEN/NOTIFY),
-- and index expiry only for finished tasks, so claiming and running a task
-- add no entries to it (each update of a row adds one to every index it is in).

CREATE FUNCTION flask_tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flask_tasks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify AFTER INSERT ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION flask_tasks_notify();

DROP INDEX tasks_expire_idx;
CREATE INDEX tasks_finished_expire_idx ON tasks (expire) WHERE status IN ('done', 'failed', 'cancelled');
