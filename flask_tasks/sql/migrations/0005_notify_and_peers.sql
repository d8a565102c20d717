-- Version 5: a task's outcome pushed to its notify_url (delivery state kept in the row,
-- so it survives any restart), tasks forwarded to a peer server, and a token subject's
-- tasks listed newest first.

ALTER TABLE tasks
    ADD COLUMN notify_url         text,
    ADD COLUMN notify_status      text,
    ADD COLUMN notify_attempts    integer NOT NULL DEFAULT 0,
    ADD COLUMN notify_next        timestamptz,
    ADD COLUMN notify_last_status integer,
    ADD COLUMN notify_last_error  text,
    ADD COLUMN peer               text,
    ADD COLUMN peer_task_id       text,
    ADD COLUMN peer_options       jsonb,
    ADD CONSTRAINT tasks_notify_status_check CHECK (notify_status IN ('pending', 'delivered', 'failed'));

CREATE INDEX tasks_notify_due_idx ON tasks (notify_next)
    WHERE notify_status = 'pending' AND status IN ('done', 'failed', 'cancelled');
CREATE INDEX tasks_peer_idx ON tasks (run_at) WHERE peer IS NOT NULL AND status IN ('waiting', 'running');
CREATE INDEX tasks_subject_created_idx ON tasks (subject, created DESC, id) WHERE subject IS NOT NULL;

-- The claim never takes a task a peer runs: leave those out of its index, so a backlog of
-- them (a peer that is down) costs the claim nothing.
DROP INDEX tasks_claim_idx;
CREATE INDEX tasks_claim_idx ON tasks (priority DESC, run_at) WHERE status = 'waiting' AND peer IS NULL;
