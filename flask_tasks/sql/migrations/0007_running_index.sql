-- Version 7: running tasks leave the listing's index for one of their own, which also serves
-- the rescue. Claiming a task used to add an entry to tasks_list_idx and to tasks_lease_idx
-- (each update of a row adds one to every index it is in); now it adds one to
-- tasks_running_idx alone, and renewing a lease changes no indexed column, so it can be a
-- HOT update. Running tasks are few (what handlers hold, and what peers run): the rescue
-- reads them all, and a listing of running ones reads this index as it read tasks_list_idx.

DROP INDEX tasks_lease_idx;
DROP INDEX tasks_list_idx;
CREATE INDEX tasks_list_idx ON tasks (status, type, created DESC, id DESC) WHERE status <> 'running';
CREATE INDEX tasks_running_idx ON tasks (type, created DESC, id DESC) WHERE status = 'running';

-- A subject's listing is in the order of this index (id descending too), so PostgreSQL 15's generic
-- plan for it reads a page along the index instead of reading and sorting every task of the subject.
DROP INDEX tasks_subject_created_idx;
CREATE INDEX tasks_subject_created_idx ON tasks (subject, created DESC, id DESC) WHERE subject IS NOT NULL;
