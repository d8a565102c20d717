-- Version 6: the running system made visible and operable: a task's progress, the task
-- listing's index, operator clients, the processes at work (workers), counters kept where
-- the work happens, task counts kept fresh for scrapes, and the ticks of periodic tasks.

-- What current_task().progress() last reported: {"fraction", "message", "updated"}.
ALTER TABLE tasks ADD COLUMN progress jsonb;

-- GET /task reads every listing from this index, newest first within a status and a type
-- (the five statuses are known; the types of one status are found by skipping through it).
CREATE INDEX tasks_list_idx ON tasks (status, type, created DESC, id DESC);
-- GET /task?peer=...: the tasks a peer runs, newest first (only they are in it: it stays small).
CREATE INDEX tasks_peer_created_idx ON tasks (peer, created DESC, id DESC) WHERE peer IS NOT NULL;

-- A client whose tokens carry the operator scope: it sees and acts on every task.
ALTER TABLE clients ADD COLUMN operator boolean NOT NULL DEFAULT false;

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
