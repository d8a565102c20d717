-- Version 1: the tasks table of the first release.

CREATE TABLE tasks (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type         text NOT NULL,
    args         jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'waiting'
                 CHECK (status IN ('waiting', 'running', 'done', 'failed')),
    result       jsonb,
    error        jsonb,                 -- {"message": ..., "traceback": ...}
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 3,
    worker       text,                  -- the handler that last claimed it
    claim_token  uuid,                  -- fences a completion against a rescued claim
    lease_until  timestamptz,           -- a running task past this is presumed lost
    created      timestamptz NOT NULL DEFAULT now(),
    started      timestamptz,
    finished     timestamptz,
    expire       timestamptz NOT NULL   -- the janitor deletes the row after this
) WITH (fillfactor = 80);  -- room on each page for HOT updates of status and lease

-- The claim reads waiting tasks oldest first.
CREATE INDEX tasks_waiting_idx ON tasks (created) WHERE status = 'waiting';
-- The rescue reads running tasks whose lease ran out.
CREATE INDEX tasks_lease_idx ON tasks (lease_until) WHERE status = 'running';
-- The janitor reads tasks past their expiry.
CREATE INDEX tasks_expire_idx ON tasks (expire);
