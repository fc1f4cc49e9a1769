//! The sweep of unfinished snapshots: the parts of a backup that failed or was killed, once
//! old enough that no backup still running elsewhere can own them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::{MANIFEST_NAME, SNAPSHOTS_PREFIX, SnapshotError, SnapshotId, split_key};
use crate::store::{self, Store};

/// The shortest grace `sweep_orphans` accepts: anything shorter could remove the parts of a
/// backup still running on another host that shares the store.
pub const MIN_ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// Deletes the objects of snapshots that never got a manifest (a backup that failed or was
/// killed) once both their start time (from the id) and their newest object are older than
/// `grace` (at least `MIN_ORPHAN_GRACE`), so a backup still running elsewhere is left alone.
/// The manifest's absence is checked again right before deleting. Only the names coffer
/// writes (`store::is_coffer_name`) are deleted; anything else in such a folder is left where
/// it is, with a warning. Returns the ids swept.
///
/// # Errors
/// Store errors while listing or deleting.
pub fn sweep_orphans(
    store: &dyn Store,
    grace: Duration,
    now: SystemTime,
) -> Result<Vec<String>, SnapshotError> {
    let grace = grace.max(MIN_ORPHAN_GRACE);
    let mut dirs: BTreeMap<String, (bool, Option<SystemTime>, Vec<String>)> = BTreeMap::new();
    for obj in store.list(SNAPSHOTS_PREFIX)? {
        let Some((id, name)) = split_key(&obj.key) else {
            continue;
        };
        let entry = dirs.entry(id.to_string()).or_default();
        entry.0 |= name == MANIFEST_NAME;
        entry.1 = entry.1.max(obj.modified);
        if store::is_coffer_name(name) {
            entry.2.push(obj.key.clone());
        } else if id.parse::<SnapshotId>().is_ok() {
            tracing::warn!(
                "left {} in {store}: coffer deletes only the names it writes",
                obj.key.escape_debug()
            );
        }
    }
    let old = |t: SystemTime| now.duration_since(t).unwrap_or_default() >= grace;
    let mut swept = Vec::new();
    for (id, (committed, newest, keys)) in dirs {
        // Folders that are not coffer ids are not ours to judge.
        let Ok(parsed) = id.parse::<SnapshotId>() else {
            continue;
        };
        if committed
            || keys.is_empty()
            || !newest.is_some_and(old)
            || !parsed.started().is_some_and(old)
        {
            continue;
        }
        match store.get(&parsed.manifest_key()) {
            Err(e) if e.is_not_found() => {}
            _ => continue, // committed meanwhile, or unsure: leave it
        }
        store.delete_many(&keys)?;
        swept.push(id);
    }
    // The unfinished uploads of a killed backup (S3 multipart uploads), by the same grace.
    let before = now.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    match store.sweep_uploads(SNAPSHOTS_PREFIX, before) {
        Ok(keys) if !keys.is_empty() => {
            tracing::info!(
                "aborted {} unfinished upload(s) in {store}: {}",
                keys.len(),
                keys.join(", ")
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("could not sweep the unfinished uploads of {store}: {e}"),
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    #[test]
    fn sweep_removes_only_old_unfinished_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let old = SnapshotId::new((now - 3 * hour).into());
        let young = SnapshotId::new((now + hour + hour / 2).into());
        // A second later than `old`: two ids of one instant share all but 12 random bits.
        let done = SnapshotId::new((now - 3 * hour + Duration::from_secs(1)).into());
        assert_ne!(old, done);
        for id in [&old, &young, &done] {
            store::put_bytes(&store, &id.key("files.tar.gz.age.00001"), b"p").unwrap();
        }
        store::put_bytes(&store, &done.manifest_key(), b"{}").unwrap();
        assert!(
            sweep_orphans(&store, hour, now).unwrap().is_empty(),
            "parts too young"
        );
        // Two hours on: the parts are old enough, but `young` started less than a grace ago.
        let swept = sweep_orphans(&store, Duration::ZERO, now + 2 * hour).unwrap();
        assert_eq!(swept, [old.to_string()]);
        assert_eq!(store.list("").unwrap().len(), 3);
    }

    #[test]
    fn sweep_leaves_names_coffer_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let mixed = SnapshotId::new((now - 3 * hour).into());
        let foreign = SnapshotId::new((now - 3 * hour).into());
        store::put_bytes(&store, &mixed.key("files.tar.gz.age.00001"), b"p").unwrap();
        store::put_bytes(
            &store,
            &mixed.key(".files.tar.gz.age.00002.tmp-0123abcd"),
            b"p",
        )
        .unwrap();
        store::put_bytes(&store, &mixed.key("notes.txt"), b"n").unwrap();
        store::put_bytes(&store, &foreign.key("deep/files.tar.gz.age.00001"), b"d").unwrap();
        let swept = sweep_orphans(&store, hour, now + 2 * hour).unwrap();
        assert_eq!(
            swept,
            [mixed.to_string()],
            "nothing of coffer's in {foreign}"
        );
        let left: Vec<_> = store.list("").unwrap().into_iter().map(|m| m.key).collect();
        let mut want = [
            foreign.key("deep/files.tar.gz.age.00001"),
            mixed.key("notes.txt"),
        ];
        want.sort();
        assert_eq!(left, want);
    }
}
