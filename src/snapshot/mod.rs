//! Snapshots on a store: ids, the manifest (the commit marker and only index), its signature,
//! listing, and the sweep of unfinished snapshots.
//!
//! Layout (docs/FORMAT.md is the contract): `snapshots/<id>/<stream>.<NNNNN>`, then
//! `snapshots/<id>/manifest.json.sig`, then `snapshots/<id>/manifest.json`, last. A snapshot
//! exists once its manifest exists.
//!
//! THE STORE IS UNTRUSTED: anyone who can write to it can plant a manifest. Readers act on a
//! snapshot only when its signature is by a key they trust (`signing::Trusted`); every
//! manifest is read within a size cap and checked for consistency before anything else.

mod id;
mod manifest;
mod read;
mod sweep;

use crate::signing::SigningError;
use crate::store::StoreError;

pub use id::SnapshotId;
pub use manifest::{
    BenchRecord, ChecksumsRecord, DatabaseInfo, DifferentialRecord, EntryCounts, Manifest,
    PartRecord, SourceRecord, StreamKind, TableRows, is_valid_source_name, part_name,
};
pub use read::{
    Accept, Bases, Checked, Listing, Resolved, committed_ids, delete_snapshot, list,
    newest_trusted, read_bases, read_checked, resolve, write_manifest,
};
pub use sweep::{MIN_ORPHAN_GRACE, sweep_orphans};

/// The newest on-store format this build reads. It writes version 1 for a snapshot of fulls
/// (readable by every coffer) and 2 when a folder's stream is a differential.
pub const FORMAT_VERSION: u32 = 2;
/// The `format` field of every manifest.
pub const FORMAT_NAME: &str = "coffer-snapshot";
/// Folder of all snapshots in a store.
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
const MANIFEST_NAME: &str = "manifest.json";
/// The manifest's SSH signature, written just before the manifest.
pub const SIGNATURE_NAME: &str = "manifest.json.sig";
/// The largest manifest a reader reads: a real manifest of a 1 TiB snapshot is about 3 MB.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;
/// How far a manifest's `created` may be from the time in its id.
const CREATED_SLACK: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// The longest a backup may run (`finished` − `created`).
const LONGEST_RUN: chrono::TimeDelta = chrono::TimeDelta::days(31);
/// How far ahead of this host's clock a manifest's times may be (clocks differ a little).
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::hours(1);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("'{0}' is not a snapshot id (expected YYYYMMDDTHHMMSSZ-xxxxxx, or 'latest')")]
    BadId(String),
    #[error("snapshot {id} not found in {store} (run 'coffer list' to see the snapshots)")]
    NotFound { store: String, id: String },
    #[error("{store} holds no snapshot yet")]
    Empty { store: String },
    #[error("manifest of snapshot {id} is unreadable: {why}")]
    BadManifest {
        id: String,
        why: String,
        /// Whether its signature is by a trusted key (a real snapshot this coffer cannot read,
        /// not a planted one).
        signed: bool,
    },
    #[error(
        "snapshot {id} is not signed by a trusted key: {why}. Someone with write access to the \
         store may have planted it: do not restore it ('coffer forget {id}' removes it)"
    )]
    NotTrusted { id: String, why: String },
    #[error(
        "snapshot {id} is not signed: it was made before coffer signed its snapshots, or planted by \
         someone with write access to the store. Only if you know it is yours, pass \
         --allow-unsigned to use it"
    )]
    Unsigned { id: String },
    #[error(
        "no trusted signing key: put the backup host's public key (ssh-ed25519 AAAA… name; \
         'coffer check' on the backup host prints it, and it is in its \
         state_dir/signing-key.pub) in encryption.trusted_signers"
    )]
    NoTrustedKey,
    #[error(
        "{store} holds no snapshot signed by a trusted key{}",
        if passed_over.is_empty() { String::new() } else {
            format!(" (passed over: {})", passed_over.join("; "))
        }
    )]
    NoTrustedSnapshot {
        store: String,
        passed_over: Vec<String>,
    },
    #[error("signing the manifest of snapshot {id}: {source}")]
    Sign {
        id: String,
        #[source]
        source: SigningError,
    },
    #[error("snapshot {id} has no source '{name}' (it has: {})", have.join(", "))]
    NoSuchSource {
        id: String,
        name: String,
        have: Vec<String>,
    },
    #[error(
        "snapshot {id}: source '{name}' holds what changed since the full in snapshot \
         {base}, which {why}; '{name}' of {id} cannot be restored. Restore another snapshot \
         ('coffer list' shows which are fulls)"
    )]
    BaseMissing {
        id: String,
        name: String,
        base: String,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `snapshots/<id>/<name>` → (id, name).
fn split_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(SNAPSHOTS_PREFIX)?.split_once('/')
}
