-- The full schema of the current version. A fresh database gets this file;
-- an older one gets the numbered files in migrations/ above its version.
-- tests/test_schema.py checks that both roads give the same tables and indexes.

-- A new task's id when the row is inserted without one (tasks stored through the API bring theirs,
-- enqueue.new_ids): a time-ordered (version 7) UUID, the time in ms and 74 random bits, so that the
-- tasks stored together sit together in the primary key (migrations/0008_time_ordered_ids.sql).
CREATE FUNCTION flask_tasks_new_id() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
        52, 1), 53, 1), 'hex')::uuid
$$;

CREATE TABLE tasks (
    id               uuid PRIMARY KEY DEFAULT flask_tasks_new_id(),
    type             text NOT NULL,
    args             jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'waiting',
    result           jsonb,
    last_error       jsonb,              -- {"message", "traceback"} of the latest failed attempt
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 3,
    worker           text,               -- the handler that last claimed it
    claim_token      uuid,               -- fences a completion against a rescued claim
    lease_until      timestamptz,        -- a running task past this is presumed lost
    created          timestamptz NOT NULL DEFAULT now(),
    started          timestamptz,
    finished         timestamptz,
    expire           timestamptz NOT NULL, -- the janitor deletes the row after this
    priority         integer NOT NULL DEFAULT 0,         -- higher runs first
    run_at           timestamptz NOT NULL DEFAULT now(), -- not claimed before this (delay, retry backoff)
    timeout          double precision,   -- seconds an attempt may run; NULL: no limit
    idempotency_key  text,               -- a second request with the same key gets this task
    cancel_requested boolean NOT NULL DEFAULT false,
    subject          text,               -- the token subject that posted it; NULL: no token
    -- Delivery of the finished task to notify_url: pending until a 2xx (delivered) or out of attempts (failed).
    notify_url         text,
    notify_status      text,
    notify_attempts    integer NOT NULL DEFAULT 0,
    notify_next        timestamptz,      -- the next attempt is due then (also the lease of one under way)
    notify_last_status integer,          -- the HTTP status of the last attempt
    notify_last_error  text,
    peer               text,             -- the peer server (PEERS) that runs it; NULL: a handler here
    peer_task_id       text,             -- its id on that peer, once sent
    peer_options       jsonb,            -- what the client asked of the peer beside type and args (max_attempts...)
    progress           jsonb,            -- what current_task().progress() last reported: {fraction, message, updated}
    CONSTRAINT tasks_status_check CHECK (status IN ('waiting', 'running', 'done', 'failed', 'cancelled')),
    CONSTRAINT tasks_notify_status_check CHECK (notify_status IN ('pending', 'delivered', 'failed'))
) WITH (
    fillfactor = 80,                        -- room on each page for HOT updates of status and lease
    autovacuum_vacuum_scale_factor = 0.01,  -- a queue table churns: vacuum after 1% dead rows...
    autovacuum_vacuum_threshold = 1000,     -- ...plus 1,000
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0        -- and let that vacuum run at full speed
);

-- The claim reads waiting tasks, highest priority first, then oldest run_at; never those a peer runs.
CREATE INDEX tasks_claim_idx ON tasks (priority DESC, run_at) WHERE status = 'waiting' AND peer IS NULL;
-- The janitor reads finished tasks past their expiry. Only finished ones: every update
-- of a row adds an entry to each index it is in, and claiming and running a task
-- should not pay for this one. Expired tasks still waiting are found by tasks_claim_idx.
CREATE INDEX tasks_finished_expire_idx ON tasks (expire) WHERE status IN ('done', 'failed', 'cancelled');
-- Deliveries due: finished tasks whose notify_url has not had its answer yet.
CREATE INDEX tasks_notify_due_idx ON tasks (notify_next)
    WHERE notify_status = 'pending' AND status IN ('done', 'failed', 'cancelled');
-- Tasks to send to a peer, or to ask a peer about.
CREATE INDEX tasks_peer_idx ON tasks (run_at) WHERE peer IS NOT NULL AND status IN ('waiting', 'running');
-- A token subject's own tasks, newest first (GET /api/tasks).
CREATE INDEX tasks_subject_created_idx ON tasks (subject, created DESC, id DESC) WHERE subject IS NOT NULL;
-- GET /task reads every listing from this index, newest first within a status and a type
-- (the statuses are known; the types of one status are found by skipping through it).
-- Not running tasks: claiming a task would add an entry here (each update of a row adds one
-- to every index it is in), and it is the drain's costliest index.
CREATE INDEX tasks_list_idx ON tasks (status, type, created DESC, id DESC) WHERE status <> 'running';
-- Running tasks, for the listing as above and for the rescue (running tasks whose lease ran
-- out): they are few, what handlers hold and what peers run. lease_until is in no index, so
-- renewing a lease can be a HOT update.
CREATE INDEX tasks_running_idx ON tasks (type, created DESC, id DESC) WHERE status = 'running';
-- GET /task?peer=...: the tasks a peer runs, newest first (only they are in it: it stays small).
CREATE INDEX tasks_peer_created_idx ON tasks (peer, created DESC, id DESC) WHERE peer IS NOT NULL;
-- An idempotency key is unique per subject: one client's key never finds another's task.
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key, coalesce(subject, ''))
    WHERE idempotency_key IS NOT NULL;

-- Wake idle handlers at once when tasks are inserted: once per statement, so a
-- bulk insert costs one notification. Handlers still poll, for when it is lost
-- (or LISTEN_NOTIFY is off, e.g. behind PgBouncer in transaction mode).
CREATE FUNCTION flask_tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flask_tasks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify AFTER INSERT ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION flask_tasks_notify();

-- Clients that get tokens at POST /token. The secret itself is never stored.
CREATE TABLE clients (
    name        text PRIMARY KEY,
    secret_hash text NOT NULL,              -- scrypt$n$r$p$salt$hash
    tasks       text[] NOT NULL DEFAULT '{}', -- the protected task types its tokens allow
    operator    boolean NOT NULL DEFAULT false, -- its tokens carry the operator scope: every task
    created     timestamptz NOT NULL DEFAULT now()
);

-- POST /token attempts per client id (known or not, so a refusal tells nothing about
-- which ids exist), counted before the secret is checked; deleted by a success or by the janitor.
CREATE TABLE token_failures (
    client_id    text PRIMARY KEY,
    failures     integer NOT NULL,
    last_failure timestamptz NOT NULL
);
CREATE INDEX token_failures_last_failure_idx ON token_failures (last_failure);

-- Seconds a client id waits after `failures` token requests in a row that did not succeed:
-- none for the first 5, then 2 s doubling with each one, at most 5 minutes.
CREATE FUNCTION flask_tasks_token_wait(failures integer) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN failures < 5 THEN 0 ELSE least(2 ^ least(failures - 4, 9), 300) END
$$;

-- Each handler and janitor process, from its start: alive while its heartbeat is recent.
CREATE TABLE workers (
    id           uuid PRIMARY KEY,           -- one per process start
    kind         text NOT NULL,
    name         text NOT NULL,              -- WORKER_NAME
    host         text NOT NULL,
    pid          integer NOT NULL,
    started      timestamptz NOT NULL DEFAULT now(),
    heartbeat    timestamptz NOT NULL DEFAULT now(),
    stopped      timestamptz,                -- it stopped, or its heartbeat lapsed: gone
    task_types   text[] NOT NULL DEFAULT '{}', -- the task types a handler runs
    tasks_done   bigint NOT NULL DEFAULT 0,  -- since it started
    tasks_failed bigint NOT NULL DEFAULT 0,
    current      jsonb NOT NULL DEFAULT '[]', -- the tasks it runs now: [{"id", "type", "started"}]
    CONSTRAINT workers_kind_check CHECK (kind IN ('handler', 'janitor'))
);
CREATE INDEX workers_alive_idx ON workers (heartbeat) WHERE stopped IS NULL;

-- Counters for /metrics, per process and task type. Each process writes only its own rows
-- (its totals since it started), so handlers never wait on each other; the rows of a
-- process gone are added into the nil uuid's row, so a total never goes down.
CREATE TABLE task_stats (
    worker          uuid NOT NULL,           -- workers.id; the nil uuid: processes gone
    type            text NOT NULL,
    done            bigint NOT NULL DEFAULT 0,
    failed          bigint NOT NULL DEFAULT 0,
    retried         bigint NOT NULL DEFAULT 0, -- attempts that failed and were tried again
    seconds_sum     double precision NOT NULL DEFAULT 0,
    seconds_buckets bigint[] NOT NULL,       -- attempts that ran within each bound of stats.DURATION_BUCKETS
    PRIMARY KEY (worker, type)
);

-- Tasks finished per minute, for the dashboard's plot of the last hour.
CREATE TABLE task_minutes (
    minute timestamptz PRIMARY KEY,
    done   bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0
);

-- Tasks by status and type as last counted (every STATS_INTERVAL), so a scrape or the
-- dashboard never counts a big table itself.
CREATE TABLE task_counts (
    status text NOT NULL,
    type   text NOT NULL,
    tasks  bigint NOT NULL,
    oldest timestamptz,                      -- waiting: the earliest run_at of those due
    PRIMARY KEY (status, type)
);
CREATE TABLE task_counts_taken (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    taken timestamptz NOT NULL               -- when task_counts was counted
);

-- Periodic tasks: the latest tick enqueued for each, so each tick is enqueued once.
CREATE TABLE periodic_ticks (
    name      text PRIMARY KEY,
    last_tick timestamptz NOT NULL
);
