-- The statements of the partitioned `tasks` that bench/partitions.py measures against today's table.
-- Not the product's: bench/partitions.py builds the partitioned table from flask_tasks/sql/schema.sql
-- (the same columns and indexes, with the changes partitioning forces) and takes the rest from here.
-- Each statement starts with `-- name: description`, as in flask_tasks/sql/queries.sql.

-- idempotency_keys: a unique index of a partitioned table must hold the partition key (created), so it
-- cannot keep a key unique per subject across partitions: the keys move to a table of their own, kept in
-- step with tasks (a key goes when its task goes), which insert_tasks below fills and checks
CREATE TABLE task_idempotency_keys (
    idempotency_key text NOT NULL,
    subject         text NOT NULL,           -- '' for none, as coalesce(subject, '') in the product's index
    task_id         uuid NOT NULL,
    created         timestamptz NOT NULL DEFAULT now(),  -- its task's created: the same transaction
    PRIMARY KEY (idempotency_key, subject)
);
CREATE INDEX task_idempotency_keys_created_idx ON task_idempotency_keys (created);

-- insert_tasks: queries.sql's insert_tasks for the partitioned table: the idempotency keys are claimed in task_idempotency_keys first, and only the tasks with no key or a key claimed now are stored
WITH t AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(tasks)s::jsonb)
        AS t(id uuid, type text, args jsonb, max_attempts int, priority int, run_at float8, delay float8,
             timeout float8, idempotency_key text, subject text, notify_url text, peer text, peer_options jsonb)
), keyed AS (
    INSERT INTO task_idempotency_keys (idempotency_key, subject, task_id)
    SELECT idempotency_key, coalesce(subject, ''), id FROM t WHERE idempotency_key IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING task_id
)
INSERT INTO tasks (id, type, args, max_attempts, priority, run_at, timeout, idempotency_key, subject, expire,
                   notify_url, notify_status, notify_next, peer, peer_options)
SELECT t.id, t.type, t.args, t.max_attempts, coalesce(t.priority, 0), s.start, t.timeout, t.idempotency_key,
       t.subject, greatest(s.start, now()) + make_interval(secs => %(max_task_time)s::float8),
       t.notify_url, CASE WHEN t.notify_url IS NOT NULL THEN 'pending' END,
       CASE WHEN t.notify_url IS NOT NULL THEN now() END, t.peer, t.peer_options
FROM t CROSS JOIN LATERAL (SELECT coalesce(to_timestamp(t.run_at), now() + make_interval(secs => coalesce(t.delay, 0))) AS start) s
WHERE t.idempotency_key IS NULL OR t.id IN (SELECT task_id FROM keyed)
RETURNING id::text,
          floor(extract(epoch FROM created))::bigint AS created,
          floor(extract(epoch FROM run_at))::bigint AS run_at,
          floor(extract(epoch FROM expire))::bigint AS expire;

-- partition_state: what the janitor does with a partition (its created range) past its time: 'drop' it when nothing in it must be kept; 'wait' while its last tasks expire within `patience` seconds (finished a little late: a backlog); 'held' when a task in it is not finished, is kept longer than that or its delivery is pending (then its expired tasks are deleted row by row). Each branch reads a partial index
SELECT CASE
    WHEN EXISTS (SELECT 1 FROM tasks WHERE created >= %(low)s AND created < %(high)s
                                       AND status IN ('waiting', 'running'))
      OR EXISTS (SELECT 1 FROM tasks WHERE created >= %(low)s AND created < %(high)s
                                       AND notify_status = 'pending' AND status IN ('done', 'failed', 'cancelled'))
      OR EXISTS (SELECT 1 FROM tasks WHERE created >= %(low)s AND created < %(high)s
                                       AND status IN ('done', 'failed', 'cancelled')
                                       AND expire >= now() + make_interval(secs => %(patience)s::float8))
        THEN 'held'
    WHEN EXISTS (SELECT 1 FROM tasks WHERE created >= %(low)s AND created < %(high)s
                                       AND status IN ('done', 'failed', 'cancelled') AND expire >= now())
        THEN 'wait'
    ELSE 'drop'
END;

-- forget_partition_keys: the idempotency keys of the tasks of a partition dropped
DELETE FROM task_idempotency_keys WHERE created >= %(low)s AND created < %(high)s;

-- delete_expired_in: queries.sql's delete_expired_tasks, only in one partition (its created range: one held past its time by a task kept longer), and the idempotency keys of the tasks deleted
WITH deleted AS (
    DELETE FROM tasks WHERE created >= %(low)s AND created < %(high)s AND id IN (
        SELECT id FROM tasks
        WHERE created >= %(low)s AND created < %(high)s
          AND expire < now() AND status IN ('done', 'failed', 'cancelled')
          AND notify_status IS DISTINCT FROM 'pending'
        ORDER BY expire
        LIMIT %(limit)s::int
        FOR UPDATE SKIP LOCKED
    )
    RETURNING idempotency_key, subject
), keys AS (
    DELETE FROM task_idempotency_keys k USING deleted d
    WHERE d.idempotency_key IS NOT NULL
      AND k.idempotency_key = d.idempotency_key AND k.subject = coalesce(d.subject, '')
)
SELECT count(*) FROM deleted;
