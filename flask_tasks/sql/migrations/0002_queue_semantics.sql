-- Version 2: retries, timeouts, priorities, delays, cancellation, idempotency keys.

ALTER TABLE tasks RENAME COLUMN error TO last_error;
ALTER TABLE tasks
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN run_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN timeout double precision,
    ADD COLUMN idempotency_key text,
    ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('waiting', 'running', 'done', 'failed', 'cancelled'));

DROP INDEX tasks_waiting_idx;
CREATE INDEX tasks_claim_idx ON tasks (priority DESC, run_at) WHERE status = 'waiting';
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;

ALTER TABLE tasks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
