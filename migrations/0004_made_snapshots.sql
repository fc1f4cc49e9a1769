-- Snapshots this host made (signed, committed), and which of them this host itself removed
-- (prune, forget). The verify job compares the store with it: a snapshot made here that is
-- gone without a removal here, or a store whose newest trusted snapshot is older than the
-- newest made here, means someone deleted or rolled back snapshots in the store.
CREATE TABLE made_snapshots (
    id         TEXT PRIMARY KEY,           -- the snapshot id
    store      TEXT NOT NULL,              -- which store (local:<path>, gdrive:<drive>/<folder>/<name>)
    made       TEXT NOT NULL,              -- when its backup committed it (UTC, RFC 3339)
    removed    TEXT,                       -- when this host removed it; NULL while it should be there
    removed_by TEXT                        -- prune | forget
);
