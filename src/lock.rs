//! The one lock every coffer job shares, so two jobs (a backup and a prune, the daemon's and
//! one run by hand) never run over each other on one host.
//!
//! A flock on `state_dir/backup.lock`: the kernel releases it when its holder dies, so a file
//! left by a killed process never blocks. The file names the holder (job, pid, start) for the
//! message whoever waits gets.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow};
use chrono::Utc;

/// Another job holds the lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "another coffer {job} is running (pid {pid}, started {started}; it holds {})",
    path.display()
)]
pub struct Busy {
    pub job: String,
    pub pid: String,
    pub started: String,
    pub path: PathBuf,
}

/// Whether an error chain says another job held the lock.
pub fn is_busy(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Busy>())
}

/// Holds the state folder's lock so two backups never run at once on one host.
pub struct RunLock(#[allow(dead_code)] File);

/// Takes the one lock every coffer job shares (a flock on `state_dir/backup.lock`, released by
/// the kernel when its holder dies, so a stale file never blocks), waiting up to `wait` for
/// a running job; the file then names this job, its pid and its start for whoever waits.
///
/// # Errors
/// When the folder cannot be created, or another job still holds the lock after `wait`: the
/// message names that job, its pid and when it started.
pub fn lock_state_for(
    state_dir: &Path,
    job: &str,
    wait: std::time::Duration,
) -> anyhow::Result<RunLock> {
    use std::io::{Read, Seek, Write};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("creating state folder {}", state_dir.display()))?;
    let path = state_dir.join("backup.lock");
    // Not truncated on open: what the holder wrote stays readable until we hold the lock.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    // One made by an older coffer may be 0644.
    if file
        .metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    {
        let _ = file.set_permissions(fs::Permissions::from_mode(0o600));
    }
    // A lock can outlive its holder by a moment (a process forked while it was held keeps it
    // until that child execs): wait at least a little before calling it another job's.
    let deadline = Instant::now() + wait.max(std::time::Duration::from_secs(3));
    let mut outcome = file.try_lock();
    while matches!(outcome, Err(fs::TryLockError::WouldBlock)) && Instant::now() < deadline {
        // Ctrl-C while queued behind another job: stop waiting.
        crate::shutdown::check()?;
        std::thread::sleep(std::time::Duration::from_millis(50));
        outcome = file.try_lock();
    }
    match outcome {
        Ok(()) => {
            let note = format!(
                "job={job}\npid={}\nstarted={}\n",
                std::process::id(),
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(note.as_bytes()))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(RunLock(file))
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut held = String::new();
            let _ = file.rewind().and_then(|()| file.read_to_string(&mut held));
            let field = |k: &str| {
                held.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .unwrap_or("?")
                    .to_string()
            };
            Err(anyhow!(Busy {
                job: field("job"),
                pid: field("pid"),
                started: field("started"),
                path,
            }))
        }
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}
