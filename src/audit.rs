//! Rollback and deletion: the store compared with what this host knows it made.
//!
//! Signatures stop a store writer from adding snapshots, not from deleting them or putting an
//! older copy of the store back. The host remembers every snapshot it committed and every one
//! it removed itself (`catalog`'s `made_snapshots`); the verify job lists the store and calls
//! out what does not add up: a snapshot made here that is gone although no prune or forget of
//! this host removed it, a store whose newest trusted snapshot is older than the newest made
//! here, and snapshots in it that this host did not sign.

use std::collections::BTreeSet;

use crate::catalog::MadeSnapshot;
use crate::signing::Trust;
use crate::snapshot::{Listing, SnapshotError};

/// What does not add up, one sentence each (empty: the store holds what it should).
pub fn audit(listing: &Listing, made: &[MadeSnapshot]) -> Vec<String> {
    let mut problems = Vec::new();
    let trusted: BTreeSet<String> = listing.trusted().map(|m| m.id.to_string()).collect();
    let unreadable: BTreeSet<&str> = listing
        .unreadable
        .iter()
        .filter_map(|e| match e {
            SnapshotError::BadManifest { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let expected: Vec<&MadeSnapshot> = made.iter().filter(|m| m.removed.is_none()).collect();
    let made_here: BTreeSet<&str> = made.iter().map(|m| m.id.as_str()).collect();
    for m in &expected {
        if trusted.contains(&m.id) {
            continue;
        }
        let made_at = m.made.format("%Y-%m-%d %H:%M UTC");
        if let Some(c) = listing
            .snapshots
            .iter()
            .find(|c| c.manifest.id.as_str() == m.id)
        {
            let why = match &c.trust {
                Trust::Untrusted { why } => why.clone(),
                _ => "its signature is gone".into(),
            };
            problems.push(format!(
                "snapshot {}, made by this host {made_at}, no longer verifies ({why}): someone \
                 with write access to the store changed it",
                m.id
            ));
        } else if unreadable.contains(m.id.as_str()) {
            problems.push(format!(
                "snapshot {}, made by this host {made_at}, has a manifest that can no longer be \
                 read: someone with write access to the store changed it ('coffer list' shows why)",
                m.id
            ));
        } else {
            problems.push(format!(
                "snapshot {}, made by this host {made_at}, is gone from the store, and no prune \
                 or forget of this host removed it: someone with write access to the store \
                 deleted it (or another host sharing the store pruned it)",
                m.id
            ));
        }
    }
    let newest_made = expected.iter().map(|m| m.id.as_str()).max();
    let newest_trusted = listing.trusted().map(|m| m.id.as_str()).max();
    if let Some(made) = newest_made
        && newest_trusted.is_none_or(|t| t < made)
    {
        problems.push(format!(
            "the store's newest trusted snapshot ({}) is older than {made}, the newest this host \
             made: the store was rolled back, or its newest snapshots deleted",
            newest_trusted.unwrap_or("none")
        ));
    }
    // Snapshots this host did not sign. Unsigned ones older than the first it made are those
    // of the coffer before signatures; newer ones cannot be this host's.
    let first_made = made.iter().map(|m| m.id.as_str()).min();
    for c in listing.not_trusted() {
        let id = c.manifest.id.as_str();
        if made_here.contains(id) {
            continue; // reported above
        }
        match &c.trust {
            Trust::Untrusted { why } => problems.push(format!(
                "snapshot {id} is not signed by a trusted key ({why}): someone with write access \
                 to the store may have planted it; 'coffer forget {id}' removes it"
            )),
            Trust::Unsigned if first_made.is_some_and(|f| id > f) => problems.push(format!(
                "snapshot {id} is not signed, yet newer than the first snapshot this host signed: \
                 someone with write access to the store may have planted it; 'coffer forget \
                 {id}' removes it"
            )),
            _ => {}
        }
    }
    for e in &listing.unreadable {
        if let SnapshotError::BadManifest { id, why, .. } = e
            && !made_here.contains(id.as_str())
            && first_made.is_some_and(|f| id.as_str() > f)
        {
            problems.push(format!(
                "snapshot {id} has a manifest that cannot be read ({why}) and was not made by \
                 this host: someone with write access to the store may have planted it; 'coffer \
                 forget {id}' removes it"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Checked, Manifest, SnapshotId};

    fn checked(id: &str, trust: Trust) -> Checked {
        let id: SnapshotId = id.parse().unwrap();
        Checked {
            manifest: Manifest {
                format: crate::snapshot::FORMAT_NAME.into(),
                format_version: 1,
                created: id.time(),
                finished: id.time(),
                id,
                host: "h".into(),
                coffer_version: "0".into(),
                recipients: vec![],
                sources: vec![],
            },
            trust,
        }
    }

    fn trusted() -> Trust {
        Trust::Trusted {
            signer: "h".into(),
            fingerprint: "SHA256:x".into(),
        }
    }

    fn made(id: &str, removed: bool) -> MadeSnapshot {
        MadeSnapshot {
            id: id.into(),
            made: "2026-12-01T02:00:00Z".parse().unwrap(),
            removed: removed.then(|| "2026-12-05T02:00:00Z".parse().unwrap()),
        }
    }

    const A: &str = "20261201T020000Z-000001";
    const B: &str = "20261202T020000Z-000002";
    const C: &str = "20261203T020000Z-000003";
    const OLD: &str = "20261101T020000Z-000009";

    #[test]
    fn a_store_that_holds_what_was_made_is_fine() {
        let listing = Listing {
            snapshots: vec![
                checked(B, trusted()),
                checked(A, trusted()),
                checked(OLD, Trust::Unsigned),
            ],
            unreadable: vec![],
        };
        let made = [made(A, false), made(B, false), made(C, true)];
        assert_eq!(audit(&listing, &made), Vec::<String>::new());
    }

    #[test]
    fn an_unreadable_manifest_newer_than_the_first_made_here_is_named() {
        let listing = Listing {
            snapshots: vec![checked(A, trusted())],
            unreadable: vec![SnapshotError::BadManifest {
                id: B.into(),
                why: "it holds no source".into(),
                signed: false,
            }],
        };
        let problems = audit(&listing, &[made(A, false)]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains(B) && problems[0].contains("planted"));
    }

    #[test]
    fn deletions_rollbacks_and_plants_are_named() {
        // C was made and never removed here, but is gone; A was altered; a planted unsigned
        // snapshot is newer than the first signed one.
        let planted = "20261204T020000Z-00000a";
        let listing = Listing {
            snapshots: vec![
                checked(planted, Trust::Unsigned),
                checked(B, trusted()),
                checked(
                    A,
                    Trust::Untrusted {
                        why: "altered".into(),
                    },
                ),
            ],
            unreadable: vec![],
        };
        let made = [made(A, false), made(B, false), made(C, false)];
        let problems = audit(&listing, &made);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains(A) && problems[0].contains("no longer verifies"));
        assert!(problems[1].contains(C) && problems[1].contains("is gone from the store"));
        assert!(problems[2].contains("rolled back") && problems[2].contains(C));
        assert!(problems[3].contains(planted) && problems[3].contains("planted"));
    }
}
