//! coffer: encrypted backups of a business server's database and files, to a store that the
//! backup host cannot read back, restorable with coffer or with stock `age` and `tar`.
//!
//! Data flow: `source` → `pipeline` (gzip, age, parts, sha256) → `store`; `snapshot` signs
//! and writes the manifest last. The engines are library functions: `backup`, `restore`,
//! `verify`, `prune` (and `forget`), `drill`. `commands` holds one module per subcommand and
//! only loads, calls an engine and prints; `cli` only the argument definitions. Nothing below
//! `commands` imports it.
//!
//! Modules are `pub` only where the binary (`main.rs`) or the integration tests reach in;
//! the rest are `pub(crate)`, so the compiler reports what nothing uses.

pub mod alert;
pub mod archive;
pub(crate) mod audit;
pub mod backup;
pub(crate) mod catalog;
pub(crate) mod checksums;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod database;
pub(crate) mod drill;
pub mod exit;
pub(crate) mod job;
pub mod keys;
pub mod lock;
pub(crate) mod metrics;
pub(crate) mod notify;
pub mod pipeline;
pub mod process;
pub(crate) mod progress;
pub(crate) mod prune;
pub(crate) mod restore;
pub(crate) mod retention;
pub mod schedule;
pub(crate) mod secret;
pub mod shutdown;
pub mod signing;
pub mod snapshot;
pub mod source;
pub mod staging;
pub mod store;
pub mod text;
pub(crate) mod units;
pub(crate) mod verify;
