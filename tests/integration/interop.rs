//! Promise 2: parts concatenated in order are one standard age file of a gzip'd pax tar, so
//! stock `age -d` and `tar -xz` restore a snapshot without coffer.

use std::fs;
use std::process::{Command, Stdio};

use crate::support::{Env, assert_same_tree, rich_site};

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    crate::support::prerequisite(
        found,
        &format!("{tool} is not installed"),
        "apt-get install age",
    )
}

#[test]
fn stock_age_and_tar_restore_a_multi_part_snapshot() {
    if !have("age") {
        return;
    }
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let config = env.config(&site, "64KiB", "");
    let id = env.backup(&config);
    let parts = env.parts(&id);
    assert!(parts.len() > 1);
    let target = env.path("by-hand");
    fs::create_dir(&target).unwrap();
    // cat parts* | age -d -i key | tar -xz -C target
    let script = format!(
        "cat {} | age -d -i {} | tar -xzp -C {}",
        parts
            .iter()
            .map(|p| format!("'{}'", p.display()))
            .collect::<Vec<_>>()
            .join(" "),
        env.identity.display(),
        target.display()
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&site, &target);
}

#[test]
fn stock_tar_lists_hard_links_as_two_regular_files() {
    if !have("age") {
        return;
    }
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("a.txt"), b"one inode").unwrap();
    fs::hard_link(site.join("a.txt"), site.join("b.txt")).unwrap();
    let config = env.config(&site, "64MiB", "");
    let id = env.backup(&config);
    let parts: Vec<String> = env
        .parts(&id)
        .iter()
        .map(|p| format!("'{}'", p.display()))
        .collect();
    let script = format!(
        "cat {} | age -d -i '{}' | tar -tvz",
        parts.join(" "),
        env.identity.display()
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    for (line, name) in lines.iter().zip(["a.txt", "b.txt"]) {
        // `-rw-r--r-- root/root 9 … a.txt`: a regular file with its own content, not `h…
        // link to a.txt`.
        assert!(
            line.starts_with('-') && line.ends_with(name) && line.contains(" 9 "),
            "{listing}"
        );
        assert!(!line.contains("link to"), "{listing}");
    }
}
