-- Schedules: the scheduler's fencing token (one row), each schedule's last tick, and every
-- firing with the job it made. A firing commits only while its fencing token is the highest
-- seen, so a daemon that was paused past its lease cannot fire a stale tick; a tick is fired
-- at most once (the primary key).
CREATE TABLE scheduler_fence (
    id     INTEGER PRIMARY KEY,
    fence  BIGINT NOT NULL
);
INSERT INTO scheduler_fence (id, fence) VALUES (1, 0);

CREATE TABLE schedule_state (
    name          TEXT PRIMARY KEY,
    last_tick_ms  BIGINT NOT NULL
);

CREATE TABLE schedule_firings (
    schedule   TEXT NOT NULL,
    tick_ms    BIGINT NOT NULL,
    job_id     TEXT,
    result     TEXT,
    fence      BIGINT NOT NULL,
    fired_by   TEXT NOT NULL,
    fired_at   BIGINT NOT NULL,
    PRIMARY KEY (schedule, tick_ms)
);
