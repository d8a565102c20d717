-- Version 4: clients that get tokens at POST /token, their failed attempts, and the
-- subject (token owner) of each task, whose results only that subject may read.

CREATE TABLE clients (
    name        text PRIMARY KEY,
    secret_hash text NOT NULL,              -- scrypt$n$r$p$salt$hash: the secret itself is never stored
    tasks       text[] NOT NULL DEFAULT '{}', -- the protected task types its tokens allow
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

ALTER TABLE tasks ADD COLUMN subject text;  -- the token subject that posted it; NULL: no token

-- An idempotency key is unique per subject: one client's key never finds another's task.
DROP INDEX tasks_idempotency_key_idx;
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key, coalesce(subject, ''))
    WHERE idempotency_key IS NOT NULL;
