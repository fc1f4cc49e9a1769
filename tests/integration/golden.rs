//! A format-1 snapshot committed in fixtures/golden-v1 (made once, never regenerated) must stay
//! verifiable and restorable by every later coffer.

use std::fs;
use std::path::Path;

use crate::support::{Env, walk};

#[test]
fn format_v1_golden_snapshot_still_restores() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let env = Env::new();
    let config = env.path("golden.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[encryption]\nrecipients = [\"age16zg93csty3wy00r8tswvwng786qwkztyftetahrtzqpcmgdgk9qsn50yet\"]\n\
             identity_file = \"{}\"\n[store]\ntype = \"local\"\npath = \"{}\"\n\
             [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"{}\"\n",
            root.join("quickstart-identity.txt").display(),
            root.join("golden-v1/store").display(),
            root.join("site").display(),
        ),
    )
    .unwrap();
    // Format 1 snapshots before signatures are unsigned: refused unless the operator says
    // they are theirs.
    let target = env.path("restored");
    let out = env.fails(
        &config,
        &["restore", "latest", "--to", target.to_str().unwrap()],
    );
    assert!(out.contains("no trusted signing key"), "{out}");
    assert!(!target.exists());
    let out = env.ok(&config, &["verify", "--all", "--deep", "--allow-unsigned"]);
    assert!(out.contains("ok ") && out.contains("5 parts"), "{out}");
    let out = env.run(
        &config,
        &[
            "restore",
            "latest",
            "--to",
            target.to_str().unwrap(),
            "--allow-unsigned",
        ],
    );
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not signed"),
        "the operator is warned"
    );
    // git keeps neither mtimes nor most modes: compare kinds, bytes and link targets.
    let site = root.join("site");
    let expected: Vec<_> = walk(&site)
        .into_iter()
        // The make config excluded private/backups/** (the folder itself stays).
        .filter(|p| p.parent() != Some(Path::new("private/backups")))
        .collect();
    assert_eq!(walk(&target), expected);
    for rel in expected {
        let (a, b) = (site.join(&rel), target.join(&rel));
        let meta = fs::symlink_metadata(&a).unwrap();
        if meta.file_type().is_symlink() {
            assert_eq!(fs::read_link(&a).unwrap(), fs::read_link(&b).unwrap());
        } else if meta.is_file() {
            assert_eq!(
                fs::read(&a).unwrap(),
                fs::read(&b).unwrap(),
                "{}",
                rel.display()
            );
        } else {
            assert!(b.is_dir());
        }
    }
}
