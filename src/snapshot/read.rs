//! Writing a manifest with its signature, and reading snapshots as an untrusted store holds
//! them: each manifest within a size cap, its signature checked against the trusted keys,
//! then parsed and checked; `latest` is the newest trusted snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;

use super::{
    CLOCK_SKEW, MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, SNAPSHOTS_PREFIX, SnapshotError,
    SnapshotId, SourceRecord, split_key,
};
use crate::signing::{MAX_SIGNATURE_BYTES, SigningKey, Trust, Trusted};
use crate::store::{self, Store, StoreError};

/// Commits a snapshot: writes its signature, then its manifest (the commit marker). Call
/// only after every part is stored. Returns the time the signature took (signing and storing
/// it): what signing adds to a backup.
///
/// # Errors
/// Signing or store errors; the snapshot then does not exist.
pub fn write_manifest(
    store: &dyn Store,
    manifest: &Manifest,
    key: &SigningKey,
) -> Result<Duration, SnapshotError> {
    let mut json = serde_json::to_vec_pretty(manifest).expect("a manifest always serialises");
    json.push(b'\n');
    let started = std::time::Instant::now();
    let signature = key.sign(&json).map_err(|source| SnapshotError::Sign {
        id: manifest.id.to_string(),
        source,
    })?;
    store::put_bytes(store, &manifest.id.signature_key(), &signature)?;
    let signing = started.elapsed();
    store::put_bytes(store, &manifest.id.manifest_key(), &json)?;
    Ok(signing)
}

/// A manifest that parsed and is consistent, with what its signature says.
#[derive(Debug, Clone)]
pub struct Checked {
    pub manifest: Manifest,
    pub trust: Trust,
}

/// Reads one snapshot's manifest (within `MAX_MANIFEST_BYTES`) and its signature, checks the
/// signature against `trusted`, then parses and checks the manifest. The snapshot's folder is
/// listed first, so a manifest the store says is too large is refused without being read.
///
/// # Errors
/// `NotFound` when the snapshot has no manifest, `BadManifest` when it is too large, does not
/// parse or is inconsistent; store errors.
pub fn read_checked(
    store: &dyn Store,
    id: &SnapshotId,
    trusted: &Trusted,
) -> Result<Checked, SnapshotError> {
    let manifest_key = id.manifest_key();
    let size = store
        .list(&id.prefix())?
        .into_iter()
        .find(|o| o.key == manifest_key)
        .map(|o| o.size)
        .ok_or_else(|| SnapshotError::NotFound {
            store: store.to_string(),
            id: id.to_string(),
        })?;
    read_listed(store, id, size, trusted)
}

/// `read_checked` for a manifest the store listed with `size` bytes.
fn read_listed(
    store: &dyn Store,
    id: &SnapshotId,
    size: u64,
    trusted: &Trusted,
) -> Result<Checked, SnapshotError> {
    let bad = |why: String, signed: bool| SnapshotError::BadManifest {
        id: id.to_string(),
        why,
        signed,
    };
    let now = Utc::now();
    // Nothing of a snapshot from the future is read: no real one can be there.
    if id.time() > now + CLOCK_SKEW {
        return Err(bad(
            format!(
                "its id says it started {}, in the future of this host's clock ({now}): not read",
                id.time()
            ),
            false,
        ));
    }
    if size > MAX_MANIFEST_BYTES {
        return Err(bad(too_large(Some(size)), false));
    }
    // A store that cannot answer (network, throttling) is an error for the whole listing; an
    // object that cannot be read (a link, a folder, no permission: planted) is this snapshot's
    // problem only, so one planted object never blinds every reader.
    let bytes = match store::get_bytes_limited(store, &id.manifest_key(), MAX_MANIFEST_BYTES) {
        Err(e) if e.is_not_found() => {
            return Err(SnapshotError::NotFound {
                store: store.to_string(),
                id: id.to_string(),
            });
        }
        Err(StoreError::TooLarge { .. }) => return Err(bad(too_large(None), false)),
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(e) => return Err(bad(format!("it cannot be read: {e}"), false)),
        Ok(bytes) => bytes,
    };
    let trust = match store::get_bytes_limited(store, &id.signature_key(), MAX_SIGNATURE_BYTES) {
        Ok(sig) => trusted.verify(&bytes, &sig),
        Err(e) if e.is_not_found() => Trust::Unsigned,
        Err(StoreError::TooLarge { .. }) => Trust::Untrusted {
            why: format!("its signature file is larger than {MAX_SIGNATURE_BYTES} bytes"),
        },
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(e) => Trust::Untrusted {
            why: format!("its signature file cannot be read ({e})"),
        },
    };
    let signed = trust.is_trusted();
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string(), signed))?;
    if &manifest.id != id {
        return Err(bad(format!("it names itself {}", manifest.id), signed));
    }
    manifest.check_at(now).map_err(|why| bad(why, signed))?;
    Ok(Checked { manifest, trust })
}

fn too_large(size: Option<u64>) -> String {
    match size {
        Some(n) => format!(
            "it is {n} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have (a real one \
             of a 1 TiB snapshot has about 3 MB): it was not read"
        ),
        None => format!(
            "it is larger than the {MAX_MANIFEST_BYTES} bytes a manifest may have (a real one of \
             a 1 TiB snapshot has about 3 MB): reading stopped there"
        ),
    }
}

/// Every committed snapshot of a store, newest first, with what its signature says.
#[derive(Debug, Default)]
pub struct Listing {
    pub snapshots: Vec<Checked>,
    /// Manifests that could not be read, are too large or are inconsistent.
    pub unreadable: Vec<SnapshotError>,
}

impl Listing {
    /// The snapshots signed by a trusted key, newest first: the only ones retention, the
    /// staleness check and `latest` consider.
    pub fn trusted(&self) -> impl Iterator<Item = &Manifest> {
        self.snapshots
            .iter()
            .filter(|c| c.trust.is_trusted())
            .map(|c| &c.manifest)
    }

    /// The snapshots that are not signed by a trusted key (unsigned or untrusted).
    pub fn not_trusted(&self) -> impl Iterator<Item = &Checked> {
        self.snapshots.iter().filter(|c| !c.trust.is_trusted())
    }
}

/// Every committed snapshot, newest first, each with its trust, and the manifests that could
/// not be read. A manifest the store lists as larger than `MAX_MANIFEST_BYTES` is not read.
///
/// # Errors
/// Only a failure to list the store or to read an object it listed.
pub fn list(store: &dyn Store, trusted: &Trusted) -> Result<Listing, SnapshotError> {
    let mut listing = Listing::default();
    let mut manifests: BTreeMap<SnapshotId, u64> = BTreeMap::new();
    for o in store.list(SNAPSHOTS_PREFIX)? {
        if let Some((id, MANIFEST_NAME)) = split_key(&o.key)
            && let Ok(id) = id.parse::<SnapshotId>()
        {
            manifests.insert(id, o.size);
        }
    }
    for (id, size) in manifests.into_iter().rev() {
        match read_listed(store, &id, size, trusted) {
            Ok(c) if c.trust.is_trusted() => listing.snapshots.push(c),
            // Kept as a summary: many planted manifests must not add up in memory (whoever
            // acts on one reads it again with `read_checked`).
            Ok(mut c) => {
                c.manifest.drop_parts();
                listing.snapshots.push(c);
            }
            // Deleted between the listing and the read (a prune elsewhere): not a snapshot.
            Err(SnapshotError::NotFound { .. }) => {}
            Err(e @ SnapshotError::BadManifest { .. }) => listing.unreadable.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(listing)
}

/// The ids of every committed snapshot (those with a manifest), oldest first, without
/// reading the manifests (nor checking them: planted ones included).
///
/// # Errors
/// A failure to list the store.
pub fn committed_ids(store: &dyn Store) -> Result<BTreeSet<SnapshotId>, SnapshotError> {
    Ok(store
        .list(SNAPSHOTS_PREFIX)?
        .iter()
        .filter_map(|o| split_key(&o.key))
        .filter(|(_, name)| *name == MANIFEST_NAME)
        .filter_map(|(id, _)| id.parse().ok())
        .collect())
}

/// Which snapshots a reader may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Only snapshots signed by a trusted key (the default, and always in the daemon).
    Trusted,
    /// Also unsigned ones (`--allow-unsigned`: snapshots made before coffer signed them). A
    /// signature that does not verify is refused all the same.
    TrustedOrUnsigned,
}

impl Accept {
    fn admits(self, trust: &Trust) -> bool {
        match trust {
            Trust::Trusted { .. } => true,
            Trust::Unsigned => self == Accept::TrustedOrUnsigned,
            Trust::Untrusted { .. } => false,
        }
    }
}

/// A snapshot a reader may act on.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub manifest: Manifest,
    pub trust: Trust,
    /// Newer snapshots `latest` passed over, each with why (planted, unsigned, unreadable).
    pub passed_over: Vec<String>,
}

fn refusal(id: &SnapshotId, trust: &Trust) -> SnapshotError {
    match trust {
        Trust::Unsigned => SnapshotError::Unsigned { id: id.to_string() },
        Trust::Untrusted { why } => SnapshotError::NotTrusted {
            id: id.to_string(),
            why: why.clone(),
        },
        Trust::Trusted { .. } => unreachable!("a trusted snapshot is never refused"),
    }
}

/// Resolves `latest` or an id to a snapshot `accept` admits. `latest` is the newest such
/// snapshot: newer ones that are planted, unsigned or unreadable (but not signed by a trusted
/// key) are passed over and named; a newer one signed by a trusted key whose manifest this
/// coffer cannot read is an error, never silently skipped.
///
/// # Errors
/// `NoTrustedKey` when nothing is trusted, `Empty`, `NoTrustedSnapshot`, `BadId`, `NotFound`,
/// `BadManifest`, `NotTrusted`, `Unsigned`.
pub fn resolve(
    store: &dyn Store,
    which: &str,
    trusted: &Trusted,
    accept: Accept,
) -> Result<Resolved, SnapshotError> {
    if trusted.is_empty() && accept == Accept::Trusted {
        // A new backup host has no key until its first backup makes one: an empty store says
        // so, rather than asking for a key.
        if which == "latest" && committed_ids(store)?.is_empty() {
            return Err(SnapshotError::Empty {
                store: store.to_string(),
            });
        }
        return Err(SnapshotError::NoTrustedKey);
    }
    if which != "latest" {
        let id: SnapshotId = which.parse()?;
        let c = read_checked(store, &id, trusted)?;
        if !accept.admits(&c.trust) {
            return Err(refusal(&id, &c.trust));
        }
        return Ok(Resolved {
            manifest: c.manifest,
            trust: c.trust,
            passed_over: Vec::new(),
        });
    }
    let ids = committed_ids(store)?;
    if ids.is_empty() {
        return Err(SnapshotError::Empty {
            store: store.to_string(),
        });
    }
    let mut passed_over = Vec::new();
    // With `--allow-unsigned`, `latest` is still the newest *trusted* snapshot; only a store
    // without any gives its newest unsigned one (a store of a coffer before signatures). So a
    // planted unsigned snapshot never wins over a signed one.
    let mut newest_unsigned: Option<(Checked, usize)> = None;
    for id in ids.into_iter().rev() {
        match read_checked(store, &id, trusted) {
            Ok(c) if c.trust.is_trusted() => {
                if let Some((u, pos)) = newest_unsigned {
                    passed_over.insert(
                        pos,
                        format!(
                            "{}: {}",
                            u.manifest.id,
                            refusal(&u.manifest.id, &Trust::Unsigned)
                        ),
                    );
                }
                return Ok(Resolved {
                    manifest: c.manifest,
                    trust: c.trust,
                    passed_over,
                });
            }
            Ok(c) if accept.admits(&c.trust) && newest_unsigned.is_none() => {
                newest_unsigned = Some((c, passed_over.len()));
            }
            Ok(c) => passed_over.push(format!("{id}: {}", refusal(&id, &c.trust))),
            Err(SnapshotError::NotFound { .. }) => {}
            // Signed by a trusted key but unreadable (a newer coffer's?): restoring an older
            // one instead would hand back the wrong data without a word.
            Err(e @ SnapshotError::BadManifest { signed: true, .. }) => return Err(e),
            Err(e @ SnapshotError::BadManifest { .. }) => passed_over.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    if let Some((u, before)) = newest_unsigned {
        passed_over.truncate(before);
        return Ok(Resolved {
            manifest: u.manifest,
            trust: u.trust,
            passed_over,
        });
    }
    Err(SnapshotError::NoTrustedSnapshot {
        store: store.to_string(),
        passed_over,
    })
}

/// The full streams a snapshot's differentials build on, each read and checked.
#[derive(Debug, Default, Clone)]
pub struct Bases(Vec<Manifest>);

impl Bases {
    /// The full that `s` (a differential) builds on: its snapshot and its record there;
    /// `None` for a full (or a base `read_bases` was not asked for).
    pub fn of<'a>(&'a self, s: &SourceRecord) -> Option<(&'a Manifest, &'a SourceRecord)> {
        let d = s.differential.as_ref()?;
        let m = self.0.iter().find(|m| m.id == d.base)?;
        Some((m, m.sources.iter().find(|b| b.name == s.name)?))
    }
}

/// Reads the base of every differential in `m` (of source `only`, or of all): a snapshot
/// `accept` admits (signed by a trusted key), holding the source as a full whose stream has
/// the sha256 the differential names.
///
/// # Errors
/// `BaseMissing` naming the snapshot, the source, its base and why (gone, not trusted,
/// unreadable, another stream); store errors.
pub fn read_bases(
    store: &dyn Store,
    m: &Manifest,
    only: Option<&str>,
    trusted: &Trusted,
    accept: Accept,
) -> Result<Bases, SnapshotError> {
    let mut bases: Vec<Manifest> = Vec::new();
    for s in m
        .sources
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
    {
        let Some(d) = &s.differential else {
            continue;
        };
        let missing = |why: String| SnapshotError::BaseMissing {
            id: m.id.to_string(),
            name: s.name.clone(),
            base: d.base.to_string(),
            why,
        };
        if !bases.iter().any(|b| b.id == d.base) {
            let base = match read_checked(store, &d.base, trusted) {
                Ok(c) if accept.admits(&c.trust) => c.manifest,
                Ok(c) => return Err(missing(refusal(&d.base, &c.trust).to_string())),
                Err(SnapshotError::NotFound { .. }) => {
                    return Err(missing("is no longer in the store".into()));
                }
                Err(e @ SnapshotError::BadManifest { .. }) => {
                    return Err(missing(format!("cannot be read ({e})")));
                }
                Err(e) => return Err(e),
            };
            bases.push(base);
        }
        let base = bases.iter().find(|b| b.id == d.base).expect("just read");
        match base.sources.iter().find(|b| b.name == s.name) {
            None => return Err(missing(format!("has no source '{}'", s.name))),
            Some(b) if b.differential.is_some() => {
                return Err(missing(format!("holds '{}' as a differential too", s.name)));
            }
            Some(b) if b.sha256 != d.base_sha256 || !b.kind.is_folder() => {
                return Err(missing(format!(
                    "holds another stream of '{}' than the one it was made against",
                    s.name
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Bases(bases))
}

/// The newest snapshot signed by a trusted key, reading manifests newest first only until it
/// is found (the staleness check and `status`); `None` when there is none.
///
/// # Errors
/// Store errors.
pub fn newest_trusted(
    store: &dyn Store,
    trusted: &Trusted,
) -> Result<Option<Manifest>, SnapshotError> {
    for id in committed_ids(store)?.into_iter().rev() {
        match read_checked(store, &id, trusted) {
            Ok(c) if c.trust.is_trusted() => return Ok(Some(c.manifest)),
            Ok(_) | Err(SnapshotError::NotFound { .. } | SnapshotError::BadManifest { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Deletes one snapshot: its manifest first (from then on it is no snapshot), then its other
/// objects of the names coffer writes (`store::is_coffer_name`); anything else in its folder
/// is left with a warning. A deletion cut short leaves parts for the orphan sweep, never a
/// snapshot with holes.
///
/// # Errors
/// The first store error; what is left is swept later.
pub fn delete_snapshot(store: &dyn Store, id: &SnapshotId) -> Result<(), SnapshotError> {
    store.delete(&id.manifest_key())?;
    let prefix = id.prefix();
    let mut keys = Vec::new();
    for o in store.list(&prefix)? {
        let name = o.key.strip_prefix(&prefix).unwrap_or(&o.key);
        if !store::is_coffer_name(name) {
            tracing::warn!(
                "left {} of deleted snapshot {id} in {store}: coffer deletes only the names it \
                 writes",
                crate::text::Printable(&o.key)
            );
            continue;
        }
        keys.push(o.key);
    }
    store.delete_many(&keys)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{FORMAT_NAME, FORMAT_VERSION, PartRecord, SourceRecord};
    use crate::store::LocalStore;
    use chrono::DateTime;
    use std::collections::BTreeMap;

    fn sample(id: &SnapshotId) -> Manifest {
        let part = PartRecord {
            name: "files.tar.gz.age.00001".into(),
            size: 1,
            sha256: "00".into(),
            etag: None,
        };
        let source = SourceRecord {
            name: "files".into(),
            kind: crate::snapshot::StreamKind::Directory,
            stream: "files.tar.gz.age".into(),
            plaintext_bytes: 1,
            compressed_bytes: 1,
            encrypted_bytes: 1,
            sha256: "00".into(),
            parts: vec![part],
            entries: None,
            file_bytes: None,
            checksums: None,
            warnings: BTreeMap::new(),
            dump_tool: None,
            dump_tool_version: None,
            database: None,
            differential: None,
            bench: None,
        };
        Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            id: id.clone(),
            created: id.time(),
            finished: id.time() + chrono::TimeDelta::seconds(5),
            host: "h".into(),
            coffer_version: "0".into(),
            recipients: vec![],
            sources: vec![source],
        }
    }

    fn id_at(t: &str) -> SnapshotId {
        SnapshotId::new(t.parse().unwrap())
    }

    /// Writes a manifest as a store writer could: any bytes, signed or not.
    fn plant(store: &LocalStore, m: &Manifest, key: Option<&SigningKey>) {
        match key {
            Some(key) => {
                write_manifest(store, m, key).unwrap();
            }
            None => {
                store::put_bytes(store, &m.id.manifest_key(), &serde_json::to_vec(m).unwrap())
                    .unwrap();
            }
        }
    }

    /// A differential of `base`'s `files`, made a minute later.
    fn differential_of(base: &Manifest) -> Manifest {
        let id = SnapshotId::new(base.id.time() + chrono::TimeDelta::minutes(1));
        let mut m = sample(&id);
        m.format_version = 2;
        m.sources[0].differential = Some(crate::snapshot::DifferentialRecord {
            base: base.id.clone(),
            base_sha256: "ab".repeat(32),
            changed_files: 1,
            changed_bytes: 1,
        });
        m
    }

    #[test]
    fn a_differential_is_read_only_when_its_full_is_there_trusted_and_the_same_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let key = SigningKey::generate("h");
        let trusted = Trusted::new([key.public()]);
        let mut full = sample(&id_at("2026-12-01T02:00:00Z"));
        full.sources[0].sha256 = "ab".repeat(32);
        let diff = differential_of(&full);
        write_manifest(&store, &diff, &key).unwrap();
        let read = |m: &Manifest| read_bases(&store, m, None, &trusted, Accept::Trusted);
        let why = |r: Result<Bases, SnapshotError>| match r {
            Err(SnapshotError::BaseMissing { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(read(&diff)).contains("no longer in the store"));
        // Planted: not signed by a trusted key.
        plant(&store, &full, None);
        assert!(why(read(&diff)).contains("not signed"));
        // Another stream of the same name.
        let mut other = full.clone();
        other.sources[0].sha256 = "cd".repeat(32);
        write_manifest(&store, &other, &key).unwrap();
        assert!(why(read(&diff)).contains("another stream"));
        // The very full: read, and found for the source.
        write_manifest(&store, &full, &key).unwrap();
        let bases = read(&diff).unwrap();
        let (m, s) = bases.of(&diff.sources[0]).unwrap();
        assert_eq!(
            (&m.id, s.sha256.as_str()),
            (&full.id, full.sources[0].sha256.as_str())
        );
        // A full has none to read.
        assert!(read(&full).unwrap().of(&full.sources[0]).is_none());
    }

    #[test]
    fn inconsistent_differentials_are_refused() {
        let full = sample(&id_at("2026-12-01T02:00:00Z"));
        let now = Utc::now();
        assert_eq!(differential_of(&full).check_at(now), Ok(()));
        let mut v1 = differential_of(&full);
        v1.format_version = 1;
        let mut newer_base = differential_of(&full);
        newer_base.sources[0].differential.as_mut().unwrap().base = SnapshotId::new(now);
        let mut bad_sha = differential_of(&full);
        bad_sha.sources[0]
            .differential
            .as_mut()
            .unwrap()
            .base_sha256 = "../x".into();
        let mut of_a_dump = differential_of(&full);
        of_a_dump.sources[0].kind = crate::snapshot::StreamKind::Sqlite;
        of_a_dump.sources[0].stream = "files.sql.gz.age".into();
        of_a_dump.sources[0].parts[0].name = "files.sql.gz.age.00001".into();
        for (bad, says) in [
            (v1, "version 1"),
            (newer_base, "not older"),
            (bad_sha, "sha256"),
            (of_a_dump, "marked differential"),
        ] {
            let why = bad.check_at(now).unwrap_err();
            assert!(why.contains(says), "{why}");
        }
        assert_eq!(Manifest::version_for(&full.sources), 1);
        assert_eq!(Manifest::version_for(&differential_of(&full).sources), 2);
    }

    #[test]
    fn manifests_with_hostile_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let key = SigningKey::generate("h");
        let trusted = Trusted::new([key.public()]);
        let id = SnapshotId::new(Utc::now());
        let good = sample(&id);
        write_manifest(&store, &good, &key).unwrap();
        assert!(
            read_checked(&store, &id, &trusted)
                .unwrap()
                .trust
                .is_trusted()
        );
        let mut by_name = good.clone();
        by_name.sources[0].name = "../../etc".into();
        let mut by_stream = good.clone();
        by_stream.sources[0].stream = "../x.tar.gz.age".into();
        let mut by_part = good;
        by_part.sources[0].parts[0].name = "../../x".into();
        for bad in [by_name, by_stream, by_part] {
            write_manifest(&store, &bad, &key).unwrap();
            assert!(matches!(
                read_checked(&store, &id, &trusted),
                Err(SnapshotError::BadManifest { signed: true, .. })
            ));
        }
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let now: DateTime<Utc> = "2026-12-07T02:00:00Z".parse().unwrap();
        let id = id_at("2026-12-06T02:00:00Z");
        assert_eq!(sample(&id).check_at(now), Ok(()));
        let mut far = sample(&id);
        far.created = "2099-01-01T00:00:00Z".parse().unwrap();
        far.finished = far.created;
        let mut backwards = sample(&id);
        backwards.finished = id.time() - chrono::TimeDelta::seconds(1);
        let mut empty = sample(&id);
        empty.sources.clear();
        let future_id = id_at("2026-12-07T04:00:00Z");
        for (m, what) in [
            (far, "far from the time in its id"),
            (backwards, "cannot follow its start"),
            (empty, "no source"),
            (sample(&future_id), "in the future"),
        ] {
            let why = m.check_at(now).unwrap_err();
            assert!(why.contains(what), "{why}");
        }
    }

    #[test]
    fn latest_is_the_newest_trusted_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let ours = SigningKey::generate("ours");
        let theirs = SigningKey::generate("theirs");
        let trusted = Trusted::new([ours.public()]);
        // Before the first backup (no key made yet), an empty store is named as such.
        assert!(matches!(
            resolve(&store, "latest", &Trusted::default(), Accept::Trusted),
            Err(SnapshotError::Empty { .. })
        ));
        let real = id_at("2026-12-01T02:00:00Z");
        let planted_signed = id_at("2026-12-02T02:00:00Z");
        let planted_unsigned = id_at("2026-12-03T02:00:00Z");
        plant(&store, &sample(&real), Some(&ours));
        plant(&store, &sample(&planted_signed), Some(&theirs));
        plant(&store, &sample(&planted_unsigned), None);
        // A 2099 forgery with garbage in it: unreadable, passed over.
        store::put_bytes(&store, &id_at("2026-12-04T02:00:00Z").manifest_key(), b"{").unwrap();

        let r = resolve(&store, "latest", &trusted, Accept::Trusted).unwrap();
        assert_eq!(r.manifest.id, real);
        assert_eq!(r.passed_over.len(), 3, "{:?}", r.passed_over);
        // --allow-unsigned does not let a planted unsigned snapshot win over a signed one.
        let r = resolve(&store, "latest", &trusted, Accept::TrustedOrUnsigned).unwrap();
        assert_eq!(r.manifest.id, real);
        assert_eq!(r.passed_over.len(), 3, "{:?}", r.passed_over);
        assert!(r.passed_over[1].contains(planted_unsigned.as_str()));
        let r = resolve(
            &store,
            planted_unsigned.as_str(),
            &trusted,
            Accept::TrustedOrUnsigned,
        );
        assert_eq!(
            r.unwrap().trust,
            Trust::Unsigned,
            "named, an unsigned one is allowed"
        );
        assert!(matches!(
            resolve(
                &store,
                planted_signed.as_str(),
                &trusted,
                Accept::TrustedOrUnsigned
            ),
            Err(SnapshotError::NotTrusted { .. })
        ));
        assert!(matches!(
            resolve(&store, planted_unsigned.as_str(), &trusted, Accept::Trusted),
            Err(SnapshotError::Unsigned { .. })
        ));
        assert!(matches!(
            resolve(&store, "latest", &Trusted::default(), Accept::Trusted),
            Err(SnapshotError::NoTrustedKey)
        ));
        assert_eq!(newest_trusted(&store, &trusted).unwrap().unwrap().id, real);
        let listing = list(&store, &trusted).unwrap();
        assert_eq!(
            listing.trusted().map(|m| &m.id).collect::<Vec<_>>(),
            [&real]
        );
        assert_eq!(listing.not_trusted().count(), 2);
        assert_eq!(listing.unreadable.len(), 1);
    }

    #[test]
    fn a_store_of_only_unsigned_snapshots_gives_its_newest_with_allow_unsigned() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let trusted = Trusted::new([SigningKey::generate("h").public()]);
        let (a, b) = (id_at("2026-11-01T02:00:00Z"), id_at("2026-11-02T02:00:00Z"));
        plant(&store, &sample(&a), None);
        plant(&store, &sample(&b), None);
        assert!(matches!(
            resolve(&store, "latest", &trusted, Accept::Trusted),
            Err(SnapshotError::NoTrustedSnapshot { .. })
        ));
        let r = resolve(&store, "latest", &trusted, Accept::TrustedOrUnsigned).unwrap();
        assert_eq!((r.manifest.id, r.passed_over.len()), (b, 0));
    }

    #[test]
    fn an_unreadable_object_blinds_no_reader() {
        // A planted manifest whose signature is a folder, and one dated next year: the
        // listing goes on, and `latest` is the real snapshot.
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let key = SigningKey::generate("h");
        let trusted = Trusted::new([key.public()]);
        let real = id_at("2026-12-01T02:00:00Z");
        plant(&store, &sample(&real), Some(&key));
        let odd = id_at("2026-12-02T02:00:00Z");
        plant(&store, &sample(&odd), None);
        std::fs::create_dir_all(dir.path().join(odd.signature_key())).unwrap();
        let future = SnapshotId::new(Utc::now() + chrono::TimeDelta::days(365));
        store::put_bytes(&store, &future.manifest_key(), b"{}").unwrap();
        let listing = list(&store, &trusted).unwrap();
        assert_eq!(listing.trusted().count(), 1);
        assert_eq!(listing.unreadable.len(), 1, "{:?}", listing.unreadable);
        assert!(matches!(
            &listing.snapshots.iter().find(|c| c.manifest.id == odd).unwrap().trust,
            Trust::Untrusted { why } if why.contains("cannot be read")
        ));
        assert_eq!(
            resolve(&store, "latest", &trusted, Accept::Trusted)
                .unwrap()
                .manifest
                .id,
            real
        );
        assert_eq!(newest_trusted(&store, &trusted).unwrap().unwrap().id, real);
    }

    #[test]
    fn a_signature_moved_from_another_snapshot_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let key = SigningKey::generate("h");
        let trusted = Trusted::new([key.public()]);
        let (a, b) = (id_at("2026-12-01T02:00:00Z"), id_at("2026-12-02T02:00:00Z"));
        plant(&store, &sample(&a), Some(&key));
        plant(&store, &sample(&b), None);
        let sig = store::get_bytes(&store, &a.signature_key()).unwrap();
        store::put_bytes(&store, &b.signature_key(), &sig).unwrap();
        let c = read_checked(&store, &b, &trusted).unwrap();
        assert!(
            matches!(&c.trust, Trust::Untrusted { why } if why.contains("moved")),
            "{:?}",
            c.trust
        );
    }

    #[test]
    fn oversized_manifests_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let id = id_at("2026-12-01T02:00:00Z");
        let folder = dir.path().join(id.prefix());
        std::fs::create_dir_all(&folder).unwrap();
        let f = std::fs::File::create(folder.join(MANIFEST_NAME)).unwrap();
        f.set_len(MAX_MANIFEST_BYTES + 1).unwrap();
        let trusted = Trusted::new([SigningKey::generate("h").public()]);
        let listing = list(&store, &trusted).unwrap();
        assert!(
            matches!(&listing.unreadable[..], [SnapshotError::BadManifest { why, .. }] if why.contains("was not read"))
        );
        assert!(matches!(
            read_checked(&store, &id, &trusted),
            Err(SnapshotError::BadManifest { why, .. }) if why.contains("was not read")
        ));
        // A store that lists a small size but holds more is cut at the limit all the same.
        let limited = store::get_bytes_limited(&store, &id.manifest_key(), 10);
        assert!(matches!(
            limited,
            Err(StoreError::TooLarge { limit: 10, .. })
        ));
    }
}
