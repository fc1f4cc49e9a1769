-- Alerts sent, for flood control: a job failing again and again alerts at most once per
-- [alerts] repeat_after until it succeeds; a stale store at most once per repeat_after.
CREATE TABLE alerts (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    job       TEXT NOT NULL,                -- backup | prune | verify | store (staleness)
    kind      TEXT NOT NULL,                -- failed | recovered | stale | success
    sent      TEXT NOT NULL,                -- UTC, RFC 3339 with milliseconds
    delivered TEXT NOT NULL                 -- the channels that took it: "email,heartbeat"
);
CREATE INDEX alerts_by_job ON alerts (job, kind, sent);
