-- Run history: one row per job run (backup, prune, verify), started by the daemon or by hand.
-- Only history: the store holds everything a restore needs; deleting this file loses nothing
-- else. Times are UTC, RFC 3339 with milliseconds ('2026-11-23T02:00:00.000Z'), so they sort
-- as text.
CREATE TABLE runs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    job       TEXT    NOT NULL,             -- backup | prune | verify
    trigger   TEXT    NOT NULL,             -- schedule | catch-up | manual
    pid       INTEGER NOT NULL,             -- the coffer process that ran it
    started   TEXT    NOT NULL,
    finished  TEXT,                         -- NULL while running
    outcome   TEXT    NOT NULL,             -- running | success | failure | stopped | skipped
                                            -- | interrupted (the process died mid-run)
    snapshot  TEXT,                         -- the snapshot made or checked
    bytes     INTEGER,                      -- stored bytes of that snapshot
    snapshots INTEGER,                      -- complete snapshots in the store afterwards
    error     TEXT                          -- why it failed or was skipped
);
CREATE INDEX runs_by_job ON runs (job, started);
