//! A store that fails at a chosen point: whatever fails, no snapshot becomes visible and the
//! failed backup's parts are removed.

use std::fs;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use coffer::config::Config;
use coffer::snapshot;
use coffer::store::{LocalStore, ObjectMeta, ObjectWriter, Store, StoreError};

use crate::support::{Env, noise};

/// Wraps a local store; the put chosen by `fail_at` fails in the way `mode` says.
struct FaultyStore {
    inner: LocalStore,
    puts: AtomicUsize,
    fail_at: FailAt,
    mode: Mode,
    /// Deletions fail too (a store gone read-only).
    fail_deletes: bool,
}

#[derive(Clone, Copy, Debug)]
enum FailAt {
    /// The n-th put (1-based).
    Put(usize),
    /// The put of the manifest.
    Manifest,
    /// The put of the manifest's signature (just before the manifest).
    Signature,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `put` itself is refused.
    Open,
    /// Writing the object's bytes fails halfway (disk full, connection reset).
    Write,
    /// Committing the object fails.
    Finish,
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "faulty {}", self.inner)
    }
}

fn injected(key: &str) -> StoreError {
    StoreError::Io {
        store: "faulty store".into(),
        op: "writing",
        key: key.into(),
        retryable: false,
        source: io::Error::other("injected fault"),
    }
}

struct FaultyWriter {
    inner: Box<dyn ObjectWriter>,
    key: String,
    mode: Option<Mode>,
    written: usize,
}

impl Write for FaultyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut buf = buf;
        if matches!(self.mode, Some(Mode::Write)) {
            // Half of the first write lands, then the disk is full.
            if self.written > 0 {
                return Err(io::Error::other("injected fault: no space left"));
            }
            buf = &buf[..buf.len().div_ceil(2)];
        }
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter for FaultyWriter {
    fn finish(self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        if matches!(self.mode, Some(Mode::Finish)) {
            return Err(injected(&self.key));
        }
        self.inner.finish()
    }
}

impl Store for FaultyStore {
    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        let hit = match self.fail_at {
            FailAt::Put(at) => n == at,
            FailAt::Manifest => key.ends_with("/manifest.json"),
            FailAt::Signature => key.ends_with("/manifest.json.sig"),
        };
        let mode = hit.then_some(self.mode);
        if matches!(mode, Some(Mode::Open)) {
            return Err(injected(key));
        }
        Ok(Box::new(FaultyWriter {
            inner: self.inner.put(key)?,
            key: key.to_string(),
            mode,
            written: 0,
        }))
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if self.fail_deletes {
            return Err(injected(key));
        }
        self.inner.delete(key)
    }
}

#[test]
fn a_failing_store_never_leaves_a_snapshot() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    for i in 0..4 {
        fs::write(site.join(format!("f{i}")), noise(i, 40_000)).unwrap();
    }
    let config = Config::load(&env.config(&site, "16KiB", "")).unwrap();
    // About ten parts, then the signature and the manifest: fail the first part, a middle
    // one, the signature and the manifest.
    for mode in [Mode::Open, Mode::Write, Mode::Finish] {
        for fail_at in [
            FailAt::Put(1),
            FailAt::Put(5),
            FailAt::Signature,
            FailAt::Manifest,
        ] {
            let store = FaultyStore {
                inner: LocalStore::new(env.store()),
                puts: AtomicUsize::new(0),
                fail_at,
                mode,
                fail_deletes: false,
            };
            let err = coffer::backup::backup(&config, &store, &|_| {}).unwrap_err();
            let msg = format!("{err:#}");
            assert!(
                msg.contains("no snapshot was written"),
                "{mode:?} at {fail_at:?}: {msg}"
            );
            assert!(
                msg.contains("injected fault"),
                "{mode:?} at {fail_at:?}: {msg}"
            );
            // Listed whatever their signature: nothing at all may be visible.
            let listing = snapshot::list(&store, &Default::default()).unwrap();
            assert!(listing.snapshots.is_empty() && listing.unreadable.is_empty());
            assert_eq!(
                store.list("").unwrap(),
                vec![],
                "{mode:?} at {fail_at:?}: parts left"
            );
        }
    }
    // A store that also refuses deletions: the cause is still reported, no snapshot is
    // visible, and the leftovers are the sweep's.
    let store = FaultyStore {
        inner: LocalStore::new(env.store()),
        puts: AtomicUsize::new(0),
        fail_at: FailAt::Put(3),
        mode: Mode::Write,
        fail_deletes: true,
    };
    let msg = format!(
        "{:#}",
        coffer::backup::backup(&config, &store, &|_| {}).unwrap_err()
    );
    assert!(msg.contains("injected fault: no space left"), "{msg}");
    assert!(!msg.contains("may be visible"), "{msg}");
    assert!(
        snapshot::list(&store, &Default::default())
            .unwrap()
            .snapshots
            .is_empty()
    );
    assert!(
        !store.list("").unwrap().is_empty(),
        "parts were left for the sweep"
    );
    fs::remove_dir_all(env.store()).unwrap();

    // The same store and config work when nothing fails.
    let store = LocalStore::new(env.store());
    let report = coffer::backup::backup(&config, &store, &|_| {}).unwrap();
    assert!(
        report.manifest.sources[0].parts.len() > 5,
        "the test's fault points exist"
    );
}
