-- Every statement the server runs. Each starts with `-- name: description`;
-- parameters are psycopg2 named placeholders, never text built from input.

-- ({task_columns} below is a task as the API shows it: flask_tasks/shape.py defines its fields.)
--
-- A statement holding {in_status_index} comes in two forms: `name` for tasks that are not running,
-- read along tasks_list_idx, and `name_running` for running ones, along tasks_running_idx. PostgreSQL
-- reads a partial index only where the statement's own text implies its predicate, which a status
-- given as a parameter never does.
--
-- The listing's and the operators' actions' filters arrive as: statuses text[] (never empty),
-- types text[] (NULL: any), since and until timestamptz (NULL: no bound), peer and subject text
-- (NULL: any). The listing's position after_created/after_id is NULL on the first page.

-- insert_tasks: store new waiting tasks (one request's, or a batch of single requests; a missing key is NULL, a missing priority or delay 0) in one statement and return the times PostgreSQL set for each (the rest is what was sent); those whose idempotency key is taken are left out (its form insert_tasks_quiet, sql/__init__.py, stops before ON CONFLICT)
INSERT INTO tasks (id, type, args, max_attempts, priority, run_at, timeout, idempotency_key, subject, expire,
                   notify_url, notify_status, notify_next, peer, peer_options)
SELECT t.id, t.type, t.args, t.max_attempts, coalesce(t.priority, 0), s.start, t.timeout, t.idempotency_key,
       t.subject, greatest(s.start, now()) + make_interval(secs => %(max_task_time)s::float8),
       t.notify_url, CASE WHEN t.notify_url IS NOT NULL THEN 'pending' END,
       CASE WHEN t.notify_url IS NOT NULL THEN now() END, t.peer, t.peer_options
FROM jsonb_to_recordset(%(tasks)s::jsonb) AS t(id uuid, type text, args jsonb, max_attempts int, priority int,
                                               run_at float8, delay float8, timeout float8, idempotency_key text,
                                               subject text, notify_url text, peer text, peer_options jsonb)
CROSS JOIN LATERAL (SELECT coalesce(to_timestamp(t.run_at), now() + make_interval(secs => coalesce(t.delay, 0))) AS start) s
ON CONFLICT (idempotency_key, coalesce(subject, '')) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id::text,
          floor(extract(epoch FROM created))::bigint AS created,
          floor(extract(epoch FROM run_at))::bigint AS run_at,
          floor(extract(epoch FROM expire))::bigint AS expire;

-- get_task: one task by id, if the asker may see it: an operator, the token subject that posted it, or anyone for a task posted without a token
SELECT {task_columns} FROM tasks
WHERE id = %(id)s::uuid AND (%(operator)s::boolean OR subject IS NULL OR subject = %(subject)s::text);

-- get_task_by_idempotency_key: the task a previous request of the same subject created with this key
SELECT {task_columns} FROM tasks
WHERE idempotency_key = %(idempotency_key)s::text AND coalesce(subject, '') = coalesce(%(subject)s::text, '');

-- cancel_task: cancel the waiting tasks of `ids` at once, ask the running ones to stop (and a peer task that may have reached its peer: its peer is told), leave finished ones as they are, only those the asker may act on (as for get_task); returns the ids it cancelled or asked to stop (a task's route passes one id, a bulk cancel a batch pick_batch locked)
UPDATE tasks
SET status = CASE WHEN status = 'waiting' AND (peer IS NULL OR attempts = 0) THEN 'cancelled' ELSE status END,
    finished = CASE WHEN status = 'waiting' AND (peer IS NULL OR attempts = 0) THEN now() ELSE finished END,
    expire = CASE WHEN status = 'waiting' AND (peer IS NULL OR attempts = 0)
                  THEN greatest(expire, now() + make_interval(secs => %(keep)s::float8)) ELSE expire END,
    cancel_requested = true,
    run_at = CASE WHEN peer IS NOT NULL THEN now() ELSE run_at END  -- its peer link acts at once
WHERE id = ANY(%(ids)s::uuid[]) AND status IN ('waiting', 'running')
  AND (%(operator)s::boolean OR subject IS NULL OR subject = %(subject)s::text)
RETURNING id::text;

-- add_client: store a client (its secret only as a hash; operator: its tokens carry the operator scope); nothing when the name is taken
INSERT INTO clients (name, secret_hash, tasks, operator)
VALUES (%(name)s, %(secret_hash)s, %(tasks)s, %(operator)s::boolean)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- list_clients: every client with the task types it may run and whether it is an operator
SELECT name, tasks, operator, floor(extract(epoch FROM created))::bigint AS created FROM clients ORDER BY name;

-- remove_client: delete a client; its tokens stay valid until they expire
DELETE FROM clients WHERE name = %(name)s RETURNING name;

-- get_client: a client's secret hash, task types and whether its tokens carry the operator scope
SELECT secret_hash, tasks, operator FROM clients WHERE name = %(name)s;

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

-- store_and_claim: in one round trip, write finished attempts (each only if its claim is still ours: fencing) and claim up to `batch` due tasks of the given types, highest priority first, marking them running; returns the claimed tasks and the claim tokens of the outcomes fenced off
WITH o AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb)
        AS o(token uuid, status text, result jsonb, error jsonb, delay float8, started float8, progress jsonb)
), stored AS (
    UPDATE tasks t
    SET status = CASE WHEN o.status = 'waiting' AND t.cancel_requested THEN 'cancelled' ELSE o.status END,
        result = o.result,
        last_error = coalesce(o.error, t.last_error),
        started = to_timestamp(o.started),
        progress = coalesce(o.progress, t.progress),
        finished = CASE WHEN o.status = 'waiting' AND NOT t.cancel_requested THEN NULL ELSE now() END,
        run_at = CASE WHEN o.status = 'waiting' THEN now() + make_interval(secs => o.delay) ELSE t.run_at END,
        expire = greatest(t.expire, now() + make_interval(secs => %(keep)s::float8)),
        claim_token = NULL, lease_until = NULL
    FROM o
    -- By the claim token alone, which names one claim of one task: the running tasks are read once
    -- and matched to the outcomes. With a condition on id too, the planner could read
    -- tasks_running_idx (whose third column is id) again for each outcome, all of it each time.
    WHERE t.claim_token = o.token AND t.status = 'running'
    RETURNING o.token
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
        started = now(), progress = NULL
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
-- The claim is read first, so it runs first: right after the statement's snapshot. Run after the
-- outcomes were stored (up to tens of milliseconds later), its FOR UPDATE met the rows another handler
-- had claimed since that snapshot, followed each to its newest version and locked it before the
-- recheck dropped it; the lock held until this statement committed, and that handler's next
-- statement (storing those tasks' outcomes) waited for it.
(SELECT false AS fenced_off, id, type, args, claim_token, attempts, max_attempts, timeout FROM claimed
 ORDER BY priority DESC, run_at)  -- the update returns rows in key order: sort them as the claim did
UNION ALL
-- Only the outcomes not stored come back (rarely any): sending back every stored token cost more.
SELECT true, o.token::text, NULL, NULL::jsonb, NULL, NULL::int, NULL::int, NULL::float8
FROM o WHERE o.token NOT IN (SELECT token FROM stored);

-- write_progress: store what a running task last reported of its progress, while its claim is ours
UPDATE tasks SET progress = %(progress)s::jsonb
-- by the primary key: a claim token is set only while the task runs (a status condition would
-- let the planner read all of tasks_running_idx, whose third column is id)
WHERE id = %(id)s::uuid AND claim_token = %(token)s::uuid;

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

-- settings_from_client: whether statement_timeout came from the connection's startup packet (a pooler may drop it)
SELECT source = 'client' FROM pg_settings WHERE name = 'statement_timeout';

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
RETURNING t.id, t.status, t.type;

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
ORDER BY tasks.created DESC, tasks.id DESC
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

-- worker_beat: record a process's heartbeat (registering it, or bringing it back if it was marked gone), its tasks done and failed since it started and what it runs now, and add its counters since the last beat to task_stats and task_minutes
WITH worker AS (
    INSERT INTO workers (id, kind, name, host, pid, started, task_types, tasks_done, tasks_failed, current)
    VALUES (%(id)s::uuid, %(kind)s::text, %(name)s::text, %(host)s::text, %(pid)s::int, to_timestamp(%(started)s::float8),
            %(task_types)s::text[], %(tasks_done)s::bigint, %(tasks_failed)s::bigint, %(current)s::jsonb)
    ON CONFLICT (id) DO UPDATE
    SET heartbeat = now(), stopped = NULL, tasks_done = excluded.tasks_done, tasks_failed = excluded.tasks_failed,
        current = excluded.current
), stats AS (
    INSERT INTO task_stats AS s (worker, type, done, failed, retried, seconds_sum, seconds_buckets)
    SELECT %(id)s::uuid, d.type, d.done, d.failed, d.retried, d.seconds_sum, d.seconds_buckets
    FROM jsonb_to_recordset(%(stats)s::jsonb)
        AS d(type text, done bigint, failed bigint, retried bigint, seconds_sum float8, seconds_buckets bigint[])
    ON CONFLICT (worker, type) DO UPDATE
    SET done = s.done + excluded.done, failed = s.failed + excluded.failed, retried = s.retried + excluded.retried,
        seconds_sum = s.seconds_sum + excluded.seconds_sum,
        seconds_buckets = (SELECT array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY i)
                           FROM unnest(s.seconds_buckets, excluded.seconds_buckets) WITH ORDINALITY AS u(a, b, i))
)
INSERT INTO task_minutes AS m (minute, done, failed)
SELECT to_timestamp(d.minute), d.done, d.failed
FROM jsonb_to_recordset(%(minutes)s::jsonb) AS d(minute bigint, done bigint, failed bigint)
ON CONFLICT (minute) DO UPDATE SET done = m.done + excluded.done, failed = m.failed + excluded.failed;

-- worker_stopped: a process stops: it is gone from now, and runs nothing
UPDATE workers SET stopped = now(), heartbeat = now(), current = '[]' WHERE id = %(id)s::uuid;

-- mark_gone_workers: mark gone the processes whose heartbeat is older than `lapse` seconds, add the counters of every process gone into the nil uuid's row (so totals never go down), and forget processes gone for a day and minutes older than a day
WITH lapsed AS (
    UPDATE workers SET stopped = now(), current = '[]'
    WHERE stopped IS NULL AND heartbeat < now() - make_interval(secs => %(lapse)s::float8)
    RETURNING id
), gone AS (
    DELETE FROM task_stats s
    WHERE s.worker <> '00000000-0000-0000-0000-000000000000'
      AND (s.worker IN (SELECT id FROM lapsed)
           OR NOT EXISTS (SELECT FROM workers w WHERE w.id = s.worker AND w.stopped IS NULL))
    RETURNING s.*
), folded AS (
    INSERT INTO task_stats AS s (worker, type, done, failed, retried, seconds_sum, seconds_buckets)
    SELECT '00000000-0000-0000-0000-000000000000', g.type, sum(g.done), sum(g.failed), sum(g.retried),
           sum(g.seconds_sum),
           (SELECT array_agg(total ORDER BY i) FROM (
                SELECT i, sum(n)::bigint AS total
                FROM gone g2, unnest(g2.seconds_buckets) WITH ORDINALITY AS u(n, i)
                WHERE g2.type = g.type GROUP BY i) per_bound)
    FROM gone g GROUP BY g.type
    ON CONFLICT (worker, type) DO UPDATE
    SET done = s.done + excluded.done, failed = s.failed + excluded.failed, retried = s.retried + excluded.retried,
        seconds_sum = s.seconds_sum + excluded.seconds_sum,
        seconds_buckets = (SELECT array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY i)
                           FROM unnest(s.seconds_buckets, excluded.seconds_buckets) WITH ORDINALITY AS u(a, b, i))
), old_workers AS (
    DELETE FROM workers WHERE stopped < now() - interval '1 day'
)
DELETE FROM task_minutes WHERE minute < now() - interval '1 day';

-- list_workers: the processes alive (heartbeat within `lapse` seconds) and, with `gone`, those gone in the last hour; alive first, then by kind and name
SELECT id::text, kind, name, host, pid, extract(epoch FROM started)::float8 AS started,
       extract(epoch FROM heartbeat)::float8 AS heartbeat,
       extract(epoch FROM clock_timestamp() - heartbeat)::float8 AS heartbeat_age,
       extract(epoch FROM stopped)::float8 AS stopped,
       (stopped IS NULL AND heartbeat >= now() - make_interval(secs => %(lapse)s::float8)) AS alive,
       task_types, tasks_done, tasks_failed, current
FROM workers
WHERE (stopped IS NULL AND heartbeat >= now() - make_interval(secs => %(lapse)s::float8))
   OR (%(gone)s::boolean AND coalesce(stopped, heartbeat) >= now() - interval '1 hour')
ORDER BY alive DESC, kind, name, started;

-- refresh_task_counts: count the tasks by status and type into task_counts (with the earliest run_at of those waiting and due), unless they were counted less than `max_age` seconds ago or another process counts them now; returns a row if it counted
WITH go AS (
    SELECT 1 AS yes
    WHERE coalesce((SELECT taken FROM task_counts_taken) < now() - make_interval(secs => %(max_age)s::float8), true)
      AND pg_try_advisory_xact_lock(hashtext('flask_tasks.task_counts'))
), counted AS (
    SELECT status, type, count(*) AS tasks,
           min(run_at) FILTER (WHERE status = 'waiting' AND peer IS NULL AND run_at <= now()) AS oldest
    FROM tasks WHERE EXISTS (SELECT FROM go)
    GROUP BY status, type
), stored AS (
    INSERT INTO task_counts AS c (status, type, tasks, oldest)
    SELECT status, type, tasks, oldest FROM counted
    ON CONFLICT (status, type) DO UPDATE SET tasks = excluded.tasks, oldest = excluded.oldest
), emptied AS (
    DELETE FROM task_counts c
    WHERE EXISTS (SELECT FROM go)
      AND NOT EXISTS (SELECT FROM counted WHERE counted.status = c.status AND counted.type = c.type)
)
INSERT INTO task_counts_taken (one, taken) SELECT true, now() FROM go
ON CONFLICT (one) DO UPDATE SET taken = excluded.taken
RETURNING taken;

-- task_counts: the tasks by status and type as last counted, with when that was
SELECT c.status, c.type, c.tasks, extract(epoch FROM c.oldest)::float8 AS oldest,
       extract(epoch FROM t.taken)::float8 AS taken
FROM task_counts_taken t LEFT JOIN task_counts c ON true;

-- task_throughput: tasks finished per minute over the last `minutes` minutes
SELECT extract(epoch FROM minute)::bigint AS minute, done, failed FROM task_minutes
WHERE minute > date_trunc('minute', now()) - make_interval(mins => %(minutes)s::int)
ORDER BY minute;

-- task_totals: the counters of every process (alive or gone), per process and task type
SELECT type, done, failed, retried, seconds_sum, seconds_buckets FROM task_stats;

-- database_now: the database's clock, in unix seconds
SELECT extract(epoch FROM now())::float8;

-- periodic_ticks: the database's clock, and the last tick done of each of these periodic entries (one row of NULLs when none has one)
SELECT now(), p.name, p.last_tick
FROM (VALUES (1)) AS one
LEFT JOIN periodic_ticks p ON p.name = ANY(%(names)s::text[]);

-- first_periodic_tick: record a new periodic entry's latest past tick as done, without enqueueing its task; nothing if another janitor recorded the entry first
INSERT INTO periodic_ticks (name, last_tick) VALUES (%(name)s::text, %(tick)s::timestamptz)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- advance_periodic_tick: move a periodic entry's last tick forward to this tick; a row only if it was behind (a concurrent janitor waits on the row lock, then finds it taken), so one transaction per tick enqueues its task
UPDATE periodic_ticks SET last_tick = %(tick)s::timestamptz
WHERE name = %(name)s::text AND last_tick < %(tick)s::timestamptz
RETURNING name;

-- cli_get_task: one task by id whoever posted it (an operator's command line), with the token subject that posted it
SELECT subject AS posted_by, {task_columns} FROM tasks WHERE id = %(id)s::uuid;

-- list_tasks_page: a page of the listing, newest first: for each status and type (the types of a status found by skipping through tasks_list_idx, or tasks_running_idx for running tasks, when no type is given), the newest `limit` entries after the cursor, from the index alone; merged and cut to `limit`, then read
WITH RECURSIVE skip AS (
    -- PostgreSQL reads a partial index only where the statement's own conditions imply its predicate,
    -- which a status from a parameter or a column never does: each read of an index says so itself
    -- (status <> 'running', status = 'running'); the other one finds nothing, or is not run at all.
    -- Two arms in one statement, not two statements (one per index, as pick_batch has) merged by the caller:
    -- that took an unfiltered page's p99 from 14-16 to 20 ms with 1,000,000 tasks stored (bench (l)).
    SELECT s.status, least((SELECT min(type) FROM tasks WHERE status = s.status AND status <> 'running'),
                           (SELECT min(type) FROM tasks WHERE s.status = 'running' AND status = 'running')) AS type
    FROM unnest(%(statuses)s::text[]) AS s(status)
    WHERE %(types)s::text[] IS NULL
    UNION ALL
    SELECT skip.status,
           least((SELECT min(type) FROM tasks WHERE status = skip.status AND status <> 'running' AND type > skip.type),
                 (SELECT min(type) FROM tasks WHERE skip.status = 'running' AND status = 'running' AND type > skip.type))
    FROM skip
    WHERE skip.type IS NOT NULL
), branches AS (
    SELECT status, type FROM skip WHERE type IS NOT NULL
    UNION ALL
    SELECT s.status, t.type FROM unnest(%(statuses)s::text[]) AS s(status), unnest(%(types)s::text[]) AS t(type)
), page AS (
    SELECT b.created AS position_created, b.id AS position_id
    FROM branches CROSS JOIN LATERAL (
        (SELECT created, id FROM tasks
         WHERE status = branches.status AND status <> 'running' AND type = branches.type
           AND created >= coalesce(%(since)s::timestamptz, '-infinity')
           AND created < coalesce(%(until)s::timestamptz, 'infinity')
           AND (created, id) < (coalesce(%(after_created)s::timestamptz, 'infinity'),
                                coalesce(%(after_id)s::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
         ORDER BY created DESC, id DESC
         LIMIT %(limit)s::int)
        UNION ALL
        (SELECT created, id FROM tasks
         WHERE branches.status = 'running' AND status = 'running' AND type = branches.type
           AND created >= coalesce(%(since)s::timestamptz, '-infinity')
           AND created < coalesce(%(until)s::timestamptz, 'infinity')
           AND (created, id) < (coalesce(%(after_created)s::timestamptz, 'infinity'),
                                coalesce(%(after_id)s::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
         ORDER BY created DESC, id DESC
         LIMIT %(limit)s::int)
    ) AS b
    ORDER BY b.created DESC, b.id DESC
    LIMIT %(limit)s::int
)
SELECT {task_columns}, page.position_created AS position
FROM page JOIN tasks ON tasks.id = page.position_id
ORDER BY page.position_created DESC, page.position_id DESC;

-- list_peer_tasks_page: a page of the listing of the tasks sent to one peer server, newest first, from tasks_peer_created_idx
SELECT {task_columns}, tasks.created AS position
FROM tasks
WHERE peer = %(peer)s::text
  AND status = ANY(%(statuses)s::text[])
  AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
  AND tasks.created >= coalesce(%(since)s::timestamptz, '-infinity')
  AND tasks.created < coalesce(%(until)s::timestamptz, 'infinity')
  AND (tasks.created, tasks.id) < (coalesce(%(after_created)s::timestamptz, 'infinity'),
                                   coalesce(%(after_id)s::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
-- tasks.created, not created: that name alone is the output column, whole unix seconds
ORDER BY tasks.created DESC, tasks.id DESC
LIMIT %(limit)s::int;

-- list_subject_tasks_page: a page of the listing of one token subject's tasks, newest first, from tasks_subject_created_idx
SELECT {task_columns}, tasks.created AS position
FROM tasks
WHERE subject = %(subject)s::text
  AND status = ANY(%(statuses)s::text[])
  AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[]))
  AND (%(peer)s::text IS NULL OR peer = %(peer)s::text)
  AND tasks.created >= coalesce(%(since)s::timestamptz, '-infinity')
  AND tasks.created < coalesce(%(until)s::timestamptz, 'infinity')
  AND (tasks.created, tasks.id) < (coalesce(%(after_created)s::timestamptz, 'infinity'),
                                   coalesce(%(after_id)s::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
-- tasks.created, not created: that name alone is the output column, whole unix seconds
ORDER BY tasks.created DESC, tasks.id DESC
LIMIT %(limit)s::int;

-- operator_clients_exist: whether any client's tokens carry the operator scope (then loopback alone is no operator)
SELECT EXISTS (SELECT 1 FROM clients WHERE operator);

-- retry_task: the failed or cancelled tasks of `ids` (not those a peer ran), only those the asker may act on (as for get_task), run again: waiting from now with their attempts from 0, kept `keep` seconds from now, their result, progress, finish and cancel cleared (last_error kept), their delivery to notify_url due again once they end; counted as retried in task_stats' nil-uuid row; returns the ids retried (a task's route passes one id, a bulk retry a batch pick_batch locked)
WITH retried AS (
    UPDATE tasks
    SET status = 'waiting', attempts = 0, result = NULL, finished = NULL, cancel_requested = false, progress = NULL,
        run_at = now(), expire = now() + make_interval(secs => %(keep)s::float8),
        notify_status = CASE WHEN notify_url IS NOT NULL THEN 'pending' END,
        notify_next = CASE WHEN notify_url IS NOT NULL THEN now() END,
        notify_attempts = 0, notify_last_status = NULL, notify_last_error = NULL
    WHERE id = ANY(%(ids)s::uuid[]) AND status IN ('failed', 'cancelled') AND peer IS NULL
      AND (%(operator)s::boolean OR subject IS NULL OR subject = %(subject)s::text)
    RETURNING id, type
), counted AS (
    INSERT INTO task_stats AS s (worker, type, retried, seconds_buckets)
    SELECT '00000000-0000-0000-0000-000000000000'::uuid, type, count(*), %(buckets)s::bigint[]
    FROM retried GROUP BY type
    ON CONFLICT (worker, type) DO UPDATE SET retried = s.retried + excluded.retried
)
SELECT id::text FROM retried;

-- task_types_of_statuses: the task types present in each of these statuses, found by skipping through tasks_list_idx (a bulk action's branches; task_types_of_statuses_running: through tasks_running_idx)
WITH RECURSIVE skip AS (
    SELECT s.status, (SELECT min(type) FROM tasks WHERE status = s.status AND {in_status_index}) AS type
    FROM unnest(%(statuses)s::text[]) AS s(status)
    UNION ALL
    SELECT skip.status,
           (SELECT min(type) FROM tasks WHERE status = skip.status AND {in_status_index} AND type > skip.type)
    FROM skip
    WHERE skip.type IS NOT NULL
)
SELECT status, type FROM skip WHERE type IS NOT NULL;

-- pick_batch: a bulk action's next batch (pick_batch_running for running tasks), locked until its transaction ends: up to `batch` tasks in one status and type that the `action` (cancel, retry or purge) takes, matching the filters and created by `started` (NULL: now, returned), newest first after the position `after_created`/`after_id`, skipping rows locked now; returns their ids, whether any are left (beyond the batch or locked), whether a locked one was passed (then keep the position), the new position, and `started`
WITH matching AS (  -- the batch and one more, locked or not, read along tasks_list_idx (or tasks_running_idx)
    SELECT id, created FROM tasks
    WHERE status = %(status)s::text AND {in_status_index} AND type = %(type)s::text
      AND CASE %(action)s::text
              WHEN 'cancel' THEN NOT cancel_requested  -- one asked to stop already is left to stop
              WHEN 'retry' THEN peer IS NULL  -- its peer decided its attempts: it is posted again instead
              WHEN 'purge' THEN notify_status IS DISTINCT FROM 'pending'  -- kept until its delivery has ended
          END
      AND created >= coalesce(%(since)s::timestamptz, '-infinity')
      AND created < coalesce(%(until)s::timestamptz, 'infinity')
      AND created <= coalesce(%(started)s::timestamptz, now())
      AND (created, id) < (coalesce(%(after_created)s::timestamptz, 'infinity'),
                           coalesce(%(after_id)s::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
      AND (%(peer)s::text IS NULL OR peer = %(peer)s::text)
      AND (%(subject)s::text IS NULL OR subject = %(subject)s::text)
    ORDER BY created DESC, id DESC
    LIMIT %(batch)s::int + 1
), picked AS (  -- those of the batch no one holds now; a row changed since it was read is read anew: passed unless still in the status
    SELECT id, created FROM tasks
    WHERE id = ANY(array(SELECT id FROM matching ORDER BY created DESC, id DESC LIMIT %(batch)s::int))
      AND status = %(status)s::text
    FOR UPDATE SKIP LOCKED
), last AS (
    SELECT created, id FROM picked ORDER BY created, id LIMIT 1
)
SELECT array(SELECT id FROM picked),
       (SELECT count(*) FROM matching) > (SELECT count(*) FROM picked),
       EXISTS (SELECT 1 FROM matching, last WHERE (matching.created, matching.id) > (last.created, last.id)
               AND matching.id NOT IN (SELECT id FROM picked)),
       (SELECT created FROM last), (SELECT id FROM last),
       coalesce(%(started)s::timestamptz, now());

-- delete_tasks: delete the tasks of `ids` (a purge's batch, which pick_batch locked); returns how many
WITH deleted AS (
    DELETE FROM tasks WHERE id = ANY(%(ids)s::uuid[]) RETURNING 1
)
SELECT count(*) FROM deleted;
