-- Every statement the server runs. Each starts with `-- name: description`;
-- parameters are psycopg2 named placeholders, never text built from input.

-- task_columns: (a fragment, not a statement) a task as the API shows it; times in unix seconds
id, type, args, status, result, error, attempts, max_attempts, worker,
floor(extract(epoch FROM created))::bigint AS created,
floor(extract(epoch FROM started))::bigint AS started,
floor(extract(epoch FROM finished))::bigint AS finished,
floor(extract(epoch FROM expire))::bigint AS expire

-- insert_task: store a new waiting task and return it
INSERT INTO tasks (type, args, max_attempts, expire)
VALUES (%(type)s, %(args)s, %(max_attempts)s, now() + make_interval(secs => %(max_task_time)s))
RETURNING {task_columns};

-- get_task: one task by id
SELECT {task_columns} FROM tasks WHERE id = %(id)s;

-- claim_tasks: take up to `batch` waiting tasks of the given types, oldest first, and mark them running
WITH picked AS (
    SELECT id FROM tasks
    WHERE status = 'waiting' AND type = ANY(%(types)s)
    ORDER BY created
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET status = 'running', worker = %(worker)s, claim_token = gen_random_uuid(),
    lease_until = now() + make_interval(secs => %(lease)s), attempts = t.attempts + 1,
    started = now()
FROM picked
WHERE t.id = picked.id
RETURNING t.id, t.type, t.args, t.claim_token, t.attempts;

-- complete_task: store a task's outcome, only if the claim is still ours (fencing)
UPDATE tasks
SET status = %(status)s, result = %(result)s::jsonb, error = %(error)s, finished = now(),
    claim_token = NULL, lease_until = NULL
WHERE id = %(id)s AND claim_token = %(token)s AND status = 'running';

-- extend_leases: keep the leases of tasks still held alive (heartbeat)
UPDATE tasks SET lease_until = now() + make_interval(secs => %(lease)s)
WHERE claim_token = ANY(%(tokens)s::uuid[]) AND status = 'running';

-- release_tasks: give held tasks back to the queue, undoing the attempt (graceful stop)
UPDATE tasks
SET status = 'waiting', attempts = greatest(attempts - 1, 0), worker = NULL,
    claim_token = NULL, lease_until = NULL, started = NULL
WHERE claim_token = ANY(%(tokens)s::uuid[]) AND status = 'running';

-- rescue_lost_tasks: return running tasks whose lease ran out to waiting, or fail them when out of attempts
WITH lost AS (
    SELECT id FROM tasks
    WHERE status = 'running' AND lease_until < now()
    ORDER BY lease_until
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'waiting' END,
    error = CASE WHEN t.attempts >= t.max_attempts
            THEN jsonb_build_object('message', format(
                'the task was lost %%s times (its handler stopped before finishing); giving up',
                t.attempts))
            ELSE t.error END,
    finished = CASE WHEN t.attempts >= t.max_attempts THEN now() END,
    claim_token = NULL, lease_until = NULL
FROM lost
WHERE t.id = lost.id
RETURNING t.id, t.status;

-- delete_expired_tasks: delete up to `limit` tasks past their expiry that are not running
DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks
    WHERE expire < now() AND status <> 'running'
    ORDER BY expire
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- schema_version_table: the table that records which schema version is in place
CREATE TABLE IF NOT EXISTS flask_tasks_schema (
    version integer PRIMARY KEY,
    applied timestamptz NOT NULL DEFAULT now()
);

-- lock_schema: serialise schema changes between processes starting at once (held until commit)
SELECT pg_advisory_xact_lock(hashtext('flask_tasks_schema'));

-- schema_version: the schema version in place (0 when none)
SELECT coalesce(max(version), 0) FROM flask_tasks_schema;

-- record_schema_version: note that a schema version is in place
INSERT INTO flask_tasks_schema (version) VALUES (%(version)s) ON CONFLICT DO NOTHING;
