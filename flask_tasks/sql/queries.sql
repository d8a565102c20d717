-- Every statement the server runs. Each starts with `-- name: description`;
-- parameters are psycopg2 named placeholders, never text built from input.

-- ({task_columns} below is a task as the API shows it: flask_tasks/shape.py defines its fields.)

-- insert_tasks: store new waiting tasks (one request's, or a batch of single requests) in one statement and return the times PostgreSQL set for each (the rest is what was sent); those whose idempotency key is taken are left out
INSERT INTO tasks (id, type, args, max_attempts, priority, run_at, timeout, idempotency_key, subject, expire,
                   notify_url, notify_status, notify_next, peer, peer_options)
SELECT t.id, t.type, t.args, t.max_attempts, t.priority, s.start, t.timeout, t.idempotency_key,
       t.subject, greatest(s.start, now()) + make_interval(secs => %(max_task_time)s::float8),
       t.notify_url, CASE WHEN t.notify_url IS NOT NULL THEN 'pending' END,
       CASE WHEN t.notify_url IS NOT NULL THEN now() END, t.peer, t.peer_options
FROM jsonb_to_recordset(%(tasks)s::jsonb) AS t(id uuid, type text, args jsonb, max_attempts int, priority int,
                                               run_at float8, delay float8, timeout float8, idempotency_key text,
                                               subject text, notify_url text, peer text, peer_options jsonb)
CROSS JOIN LATERAL (SELECT coalesce(to_timestamp(t.run_at), now() + make_interval(secs => t.delay)) AS start) s
ON CONFLICT (idempotency_key, coalesce(subject, '')) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id::text,
          floor(extract(epoch FROM created))::bigint AS created,
          floor(extract(epoch FROM run_at))::bigint AS run_at,
          floor(extract(epoch FROM expire))::bigint AS expire;

-- get_task: one task by id, if posted without a token or by this token subject
SELECT {task_columns} FROM tasks WHERE id = %(id)s::uuid AND (subject IS NULL OR subject = %(subject)s::text);

-- get_task_by_idempotency_key: the task a previous request of the same subject created with this key
SELECT {task_columns} FROM tasks
WHERE idempotency_key = %(idempotency_key)s::text AND coalesce(subject, '') = coalesce(%(subject)s::text, '');

-- cancel_task: cancel a waiting task at once, or ask a running one to stop (and a peer task that may have reached its peer: its peer is told); nothing if it had finished
UPDATE tasks
SET status = CASE WHEN status = 'waiting' AND (peer IS NULL OR attempts = 0) THEN 'cancelled' ELSE status END,
    finished = CASE WHEN status = 'waiting' AND (peer IS NULL OR attempts = 0) THEN now() ELSE finished END,
    expire = CASE WHEN status = 'waiting' AND (peer IS NULL OR attempts = 0)
                  THEN greatest(expire, now() + make_interval(secs => %(keep)s::float8)) ELSE expire END,
    cancel_requested = true,
    run_at = CASE WHEN peer IS NOT NULL THEN now() ELSE run_at END  -- its peer link acts at once
WHERE id = %(id)s::uuid AND status IN ('waiting', 'running') AND (subject IS NULL OR subject = %(subject)s::text)
RETURNING {task_columns};

-- add_client: store a client (its secret only as a hash); nothing when the name is taken
INSERT INTO clients (name, secret_hash, tasks) VALUES (%(name)s, %(secret_hash)s, %(tasks)s)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- list_clients: every client with the task types it may run
SELECT name, tasks, floor(extract(epoch FROM created))::bigint AS created FROM clients ORDER BY name;

-- remove_client: delete a client; its tokens stay valid until they expire
DELETE FROM clients WHERE name = %(name)s RETURNING name;

-- get_client: a client's secret hash and task types
SELECT secret_hash, tasks FROM clients WHERE name = %(name)s;

-- recent_token_failures: token requests of any client id counted in the last second and not (yet) successful
SELECT count(*) FROM token_failures WHERE last_failure > now() - interval '1 second';

-- count_token_attempt: count a token request against its client id before its secret is checked (a success clears it); no row while the id must wait
INSERT INTO token_failures AS f (client_id, failures, last_failure) VALUES (%(client_id)s, 1, clock_timestamp())
-- clock_timestamp(), not now(): a request that waited on another's row lock began before that row's time
ON CONFLICT (client_id) DO UPDATE SET failures = f.failures + 1, last_failure = clock_timestamp()
WHERE f.last_failure + make_interval(secs => flask_tasks_token_wait(f.failures)) <= clock_timestamp()
RETURNING failures;

-- token_wait: seconds a client id must still wait before its next token request
SELECT greatest(0, flask_tasks_token_wait(failures) - extract(epoch FROM now() - last_failure)::float8)
FROM token_failures WHERE client_id = %(client_id)s;

-- clear_token_failures: forget a client id's attempts after a success
DELETE FROM token_failures WHERE client_id = %(client_id)s;

-- delete_old_token_failures: forget failures older than a day
DELETE FROM token_failures WHERE last_failure < now() - interval '1 day';

-- store_and_claim: in one round trip, write finished attempts (each only if its claim is still ours: fencing) and claim up to `batch` due tasks of the given types, highest priority first, marking them running; returns the claimed tasks and the ids of the outcomes fenced off
WITH o AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb)
        AS o(id uuid, token uuid, status text, result jsonb, error jsonb, delay float8, started float8)
), stored AS (
    UPDATE tasks t
    SET status = CASE WHEN o.status = 'waiting' AND t.cancel_requested THEN 'cancelled' ELSE o.status END,
        result = o.result,
        last_error = coalesce(o.error, t.last_error),
        started = to_timestamp(o.started),
        finished = CASE WHEN o.status = 'waiting' AND NOT t.cancel_requested THEN NULL ELSE now() END,
        run_at = CASE WHEN o.status = 'waiting' THEN now() + make_interval(secs => o.delay) ELSE t.run_at END,
        expire = greatest(t.expire, now() + make_interval(secs => %(keep)s::float8)),
        claim_token = NULL, lease_until = NULL
    FROM o
    WHERE t.id = o.id AND t.claim_token = o.token AND t.status = 'running'
    RETURNING t.id
), claimed AS (
    -- = ANY(ARRAY(...)) rather than a join with the locked rows, where a join hashed the
    -- whole table; by ctid rather than id, so the update fetches each row where it lies
    -- instead of descending the primary key for it. The rows are locked by this statement,
    -- so no other can move them first. A row another transaction changed after this
    -- statement's snapshot (and left waiting) is locked but not updated: it stays
    -- waiting for the next claim, and no ctid ever reaches a row that was not locked.
    UPDATE tasks t
    SET status = 'running', worker = %(worker)s::text, claim_token = gen_random_uuid(),
        lease_until = now() + make_interval(secs => %(lease)s::float8), attempts = t.attempts + 1,
        started = now()
    WHERE t.ctid = ANY(ARRAY(
        SELECT ctid FROM tasks
        WHERE status = 'waiting' AND run_at <= now() AND type = ANY(%(types)s::text[]) AND peer IS NULL
        ORDER BY priority DESC, run_at
        LIMIT %(batch)s::int
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING t.id::text, t.type, t.args, t.claim_token::text, t.attempts, t.max_attempts, t.timeout,
              t.priority, t.run_at
)
-- Only the outcomes not stored come back (rarely any): sending back every stored id cost more.
SELECT true AS fenced_off, o.id::text, NULL, NULL::jsonb, NULL, NULL::int, NULL::int, NULL::float8
FROM o WHERE o.id NOT IN (SELECT id FROM stored)
UNION ALL
(SELECT false, id, type, args, claim_token, attempts, max_attempts, timeout FROM claimed
 ORDER BY priority DESC, run_at);  -- the update returns rows in key order: sort them as the claim did

-- extend_leases: keep the leases of held tasks alive (heartbeat); returns those asked to stop
UPDATE tasks SET lease_until = now() + make_interval(secs => %(lease)s::float8)
WHERE claim_token = ANY(%(tokens)s::text[]::uuid[]) AND status = 'running'
RETURNING claim_token, cancel_requested;

-- release_tasks: give held tasks back to the queue (a graceful stop, or a handler busy with a long task), undoing the attempt of those that never started; a cancelled one ends
UPDATE tasks
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'waiting' END,
    finished = CASE WHEN cancel_requested THEN now() END,
    expire = CASE WHEN cancel_requested THEN greatest(expire, now() + make_interval(secs => %(keep)s::float8))
                  ELSE expire END,
    attempts = CASE WHEN claim_token = ANY(%(started)s::text[]::uuid[]) THEN attempts
                    ELSE greatest(attempts - 1, 0) END,
    worker = NULL, claim_token = NULL, lease_until = NULL, started = NULL
WHERE claim_token = ANY(%(tokens)s::text[]::uuid[]) AND status = 'running';

-- listen: be told (by the tasks_notify trigger) when tasks are inserted
LISTEN flask_tasks;

-- rescue_lost_tasks: put running tasks whose lease ran out back to waiting, or end them when out of attempts or cancelled
WITH lost AS (
    SELECT id FROM tasks
    WHERE status = 'running' AND lease_until < now()
    ORDER BY lease_until
    LIMIT %(limit)s::int
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET status = CASE WHEN t.cancel_requested THEN 'cancelled'
                  WHEN t.attempts >= t.max_attempts THEN 'failed'
                  ELSE 'waiting' END,
    last_error = jsonb_build_object('message', format(
        'attempt %%s was lost: its handler stopped before finishing (lease expired)', t.attempts)),
    finished = CASE WHEN t.cancel_requested OR t.attempts >= t.max_attempts THEN now() END,
    expire = greatest(t.expire, now() + make_interval(secs => %(keep)s::float8)),
    claim_token = NULL, lease_until = NULL
FROM lost
WHERE t.id = lost.id
RETURNING t.id, t.status;

-- delete_expired_tasks: delete up to `limit` finished tasks past their expiry whose delivery to notify_url has ended
DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks
    WHERE expire < now() AND status IN ('done', 'failed', 'cancelled') AND notify_status IS DISTINCT FROM 'pending'
    ORDER BY expire
    LIMIT %(limit)s::int
    FOR UPDATE SKIP LOCKED
);

-- vacuum_tasks: make the space of dead row versions reusable (skipped if another vacuum runs)
VACUUM (SKIP_LOCKED) tasks;

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

-- claim_deliveries: take up to `limit` due deliveries of finished tasks to their notify_url, counting the attempt and holding each for `lease` seconds (a deliverer that dies lets it come due again); returns the task as GET shows it
WITH due AS (
    SELECT id FROM tasks
    WHERE notify_status = 'pending' AND status IN ('done', 'failed', 'cancelled') AND notify_next <= now()
    ORDER BY notify_next
    LIMIT %(limit)s::int
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks
SET notify_attempts = notify_attempts + 1, notify_next = now() + make_interval(secs => %(lease)s::float8)
WHERE id IN (SELECT id FROM due)
RETURNING notify_url AS delivery_url, notify_attempts AS delivery_attempt, {task_columns};

-- record_delivery: how an attempt went: delivered on a 2xx, else due again in `retry_in` seconds, or failed once out of attempts; nothing if a later attempt has begun
UPDATE tasks
SET notify_status = CASE WHEN %(delivered)s THEN 'delivered'
                         WHEN notify_attempts >= %(max_attempts)s::int THEN 'failed'
                         ELSE 'pending' END,
    notify_next = now() + make_interval(secs => %(retry_in)s::float8),
    notify_last_status = %(status)s::int,
    notify_last_error = %(error)s::text
WHERE id = %(id)s::uuid AND notify_attempts = %(attempt)s::int AND notify_status = 'pending';

-- list_subject_tasks: the newest tasks one token subject posted, newest first (GET /api/tasks)
SELECT {task_columns} FROM tasks
WHERE subject = %(subject)s::text
-- tasks.created, not created: that name alone is the output column, whole unix seconds
ORDER BY tasks.created DESC, tasks.id
LIMIT %(limit)s::int;

-- claim_peer_tasks: take up to `limit` tasks due to be sent to their peer or asked about there, holding each for `lease` seconds: run_at is the lease, and each write of the round checks it is unchanged; a send counts as an attempt
UPDATE tasks
SET run_at = now() + make_interval(secs => %(lease)s::float8),
    attempts = attempts + CASE WHEN status = 'waiting' THEN 1 ELSE 0 END
WHERE id IN (
    SELECT id FROM tasks
    WHERE peer IS NOT NULL AND status IN ('waiting', 'running') AND run_at <= now()
    ORDER BY run_at
    LIMIT %(limit)s::int
    FOR UPDATE SKIP LOCKED
)
RETURNING id::text, peer, peer_task_id, status, type, args, peer_options, cancel_requested, attempts, run_at AS lease;

-- peer_task_sent: the peer has the task and runs it; ask it again after `check_in` seconds unless its callback comes first; nothing if the round's lease was lost
UPDATE tasks
SET status = 'running', peer_task_id = %(peer_task_id)s::text, worker = %(worker)s::text,
    started = coalesce(started, now()), last_error = NULL,
    run_at = now() + make_interval(secs => %(check_in)s::float8)
WHERE id = %(id)s::uuid AND run_at = %(lease)s::timestamptz AND status IN ('waiting', 'running');

-- peer_task_retry: the peer could not be reached or answered amiss: try again in `retry_in` seconds with the reason as last_error; a task past its expiry fails with it instead; nothing if the round's lease was lost
UPDATE tasks
SET last_error = jsonb_build_object('message', %(message)s::text),
    status = CASE WHEN expire < now() THEN 'failed' ELSE status END,
    finished = CASE WHEN expire < now() THEN now() END,
    expire = CASE WHEN expire < now() THEN now() + make_interval(secs => %(keep)s::float8) ELSE expire END,
    run_at = now() + make_interval(secs => %(retry_in)s::float8)
WHERE id = %(id)s::uuid AND run_at = %(lease)s::timestamptz AND status IN ('waiting', 'running');

-- fail_peer_task: end a peer task as failed here (the peer refused it or no longer has it, or it is no longer in PEERS); nothing if the round's lease was lost
UPDATE tasks
SET status = 'failed', last_error = jsonb_build_object('message', %(message)s::text), finished = now(),
    expire = greatest(expire, now() + make_interval(secs => %(keep)s::float8))
WHERE id = %(id)s::uuid AND run_at = %(lease)s::timestamptz AND status IN ('waiting', 'running');

-- settle_peer_task: end a task its peer ran, with the peer's status, result and error: only from the peer's own task for it (the ids must match), and only once
UPDATE tasks
SET status = %(status)s::text, result = %(result)s::jsonb, last_error = coalesce(%(error)s::jsonb, last_error),
    finished = now(), expire = greatest(expire, now() + make_interval(secs => %(keep)s::float8))
WHERE id = %(id)s::uuid AND peer = %(peer)s::text AND peer_task_id = %(peer_task_id)s::text
  AND status IN ('waiting', 'running')
RETURNING id::text;
