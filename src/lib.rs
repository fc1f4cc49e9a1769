//! coffer: encrypted backups of a business server's database and files, to a store that the
//! backup host cannot read back, restorable with coffer or with stock `age` and `tar`.
//!
//! Data flow: `source` → `pipeline` (gzip, age, parts, sha256) → `store`; `snapshot` signs
//! and writes the manifest last. The engines are library functions: `backup`, `restore`,
//! `verify`, `prune` (and `forget`), `drill`. `commands` holds one module per subcommand and
//! only loads, calls an engine and prints; `cli` only the argument definitions. Nothing below
//! `commands` imports it.

pub mod alert;
pub mod archive;
pub mod audit;
pub mod backup;
pub mod catalog;
pub mod checksums;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod database;
pub mod drill;
pub mod job;
pub mod keys;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod shutdown;
pub mod signing;
pub mod snapshot;
pub mod source;
pub mod staging;
pub mod store;
pub mod text;
pub mod units;
pub mod verify;
