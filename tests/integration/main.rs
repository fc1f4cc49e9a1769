//! Integration tests: one binary (links once), the real `coffer` executable for CLI behaviour,
//! the library where a test must craft what coffer would never write.

mod support;

mod alerts;
mod bench;
mod config_examples;
mod daemon;
mod daemon_jobs;
mod differential;
mod drill;
mod exit_codes;
mod faults;
mod frappe;
mod gdrive;
mod golden;
mod history;
mod hostile_dumps;
mod init;
mod interop;
mod monitoring;
mod mysql;
mod postgres;
mod prune;
mod roundtrip;
mod s3;
mod sqlite;
mod store_faults;
mod store_links;
mod untrusted_store;
