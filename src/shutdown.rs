//! A process-wide stop request (SIGTERM/SIGINT): long work checks it at safe points.
//!
//! A backup checks it on every block of plaintext and before its manifest, so a stopped backup
//! never becomes a snapshot and its parts are removed; a dump tool waiting on its server is
//! sent SIGTERM at once; prune and verify stop between objects. It is process-wide because the
//! signal is: the daemon runs one job at a time, the CLI one command.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The signal that asked for the stop (15 SIGTERM, 2 SIGINT; 0 none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signal that asked for the stop, if one did: 15 (SIGTERM) or 2 (SIGINT).
pub fn signal() -> Option<i32> {
    Some(SIGNAL.load(Ordering::SeqCst)).filter(|&s| s != 0)
}
/// Dump tools running now (pids, each leading its own process group), to stop them with the
/// process.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The error a stopped piece of work returns.
#[derive(Debug, thiserror::Error)]
#[error("stopped: coffer is shutting down")]
pub struct Stopped;

/// Asks every running piece of work to stop, and stops the running dump tools.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
    let children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    for pid in children.iter() {
        terminate(*pid);
    }
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Stopped)` once a stop was requested.
///
/// # Errors
/// `Stopped`.
pub fn check() -> Result<(), Stopped> {
    if requested() { Err(Stopped) } else { Ok(()) }
}

/// As `check`, as an I/O error (for `Write` implementations). Not of kind `Interrupted`:
/// `write_all`, `io::copy` and the tar builder retry those, forever.
///
/// # Errors
/// An error of kind `Other` wrapping `Stopped`.
pub fn check_io() -> std::io::Result<()> {
    check().map_err(std::io::Error::other)
}

/// Whether an error chain was caused by a stop request.
pub fn is_stopped(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<Stopped>()
            || e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<Stopped>())
    })
}

/// A child process registered for the stop request while this guard lives.
pub struct ChildGuard(i32);

impl ChildGuard {
    /// Registers `pid`; a stop already requested stops it at once.
    pub fn register(pid: u32) -> ChildGuard {
        let pid = i32::try_from(pid).unwrap_or(i32::MAX);
        CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        if requested() {
            terminate(pid);
        }
        ChildGuard(pid)
    }
}

impl ChildGuard {
    /// Waits until the child has exited without reaping it (its pid stays reserved), then
    /// unregisters it: a stop request can never signal a process that took over the pid.
    /// The caller reaps the child afterwards.
    pub fn release_when_exited(self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0) {
            use rustix::process::{WaitId, WaitIdOptions, waitid};
            while let Err(rustix::io::Errno::INTR) = waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {}
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let mut children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
        children.retain(|p| *p != self.0);
    }
}

/// Stops a registered tool and whatever it started (a shell script's own children hold its
/// output open too).
fn terminate(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// For commands run by hand: the first SIGINT (Ctrl-C) or SIGTERM asks the running work to
/// stop at its next safe point (a backup then removes what it stored and writes no
/// snapshot); a second one exits at once.
pub fn stop_on_signals() {
    let spawned = std::thread::Builder::new()
        .name("coffer-signals".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                for n in 0..2 {
                    let signal = tokio::select! {
                        _ = term.recv() => 15,
                        _ = int.recv() => 2,
                    };
                    if n == 0 {
                        SIGNAL.store(signal, Ordering::SeqCst);
                        eprintln!("stopping: cleaning up (press Ctrl-C again to quit at once)");
                        request();
                    }
                }
                std::process::exit(130);
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for Ctrl-C: {e}");
    }
}
