-- Background tasks (`kernel::tasks`): one row per task, its mutable state rewritten by the
-- instance running it. `instance` and `heartbeat_at` say who runs it and when it last said so,
-- so that a task whose instance died is found and failed (or resumed) after a restart.
CREATE TABLE nexus_tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    details TEXT NOT NULL,
    steps TEXT NOT NULL,
    logs TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_by TEXT NOT NULL,
    instance TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    heartbeat_at BIGINT NOT NULL
);

CREATE INDEX nexus_tasks_created ON nexus_tasks (created_at);
CREATE INDEX nexus_tasks_status ON nexus_tasks (status);
