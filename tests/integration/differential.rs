//! Differential folder streams (issue 17, the walk so far): a full with its index, then a
//! differential against that index, restored by stock GNU tar with `-G` (deletions applied),
//! and by coffer's own extraction, into exactly the tree as it was at the differential.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use coffer::source::index::{IndexHeader, IndexReader, IndexWriter, index_path};
use coffer::source::{Against, DirectorySource, Excludes};

use crate::support::{assert_same_tree, prerequisite};

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// Extracts `tar` into `dir` with GNU tar's `-G` (deletions from the dumpdir records).
fn gnu_extract(tar: &[u8], dir: &Path) {
    let file = dir.with_extension("tar");
    fs::write(&file, tar).unwrap();
    let out = Command::new("tar")
        .arg("-xpG")
        .arg("-f")
        .arg(&file)
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -xG: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_differential_leaves_unchanged_files_out_and_gnu_tar_applies_its_deletions() {
    let gnu = Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"));
    if !prerequisite(gnu, "GNU tar is needed", "apt-get install tar") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write(&site, "keep.txt", b"unchanged");
    write(
        &site,
        "big/attachment.bin",
        &crate::support::noise(7, 300_000),
    );
    write(&site, "edit.txt", b"version 1");
    write(&site, "setback.txt", b"AAAA");
    write(&site, "gone.txt", b"deleted later");
    write(&site, "old/inner.txt", b"a folder deleted later");
    write(&site, "flip", b"a file that becomes a folder");
    write(&site, "mode.txt", b"chmod only");
    write(&site, "a.txt", b"a file beside folder a");
    write(&site, "a/b.txt", b"inside a");
    fs::create_dir_all(site.join("empty")).unwrap();
    symlink("keep.txt", site.join("link")).unwrap();

    // The full, and its index.
    let state = tmp.path().join("state");
    let path = index_path(&state, "files", "20261207T020000Z-000001");
    let header = IndexHeader {
        snapshot: "20261207T020000Z-000001".into(),
        config: "test".into(),
        root_dev: 0,
        root_ino: 0,
    };
    let source = DirectorySource::new(&site, Excludes::new(&[]).unwrap());
    let mut writer = IndexWriter::create(&path, &header).unwrap();
    let mut full = Vec::new();
    let outcome = source
        .write_tar_against(&mut full, Against::Full(Some(&mut writer)))
        .unwrap();
    writer.finish().unwrap().commit().unwrap();
    assert_eq!(outcome.unchanged_files, 0);
    let at_full = tempfile::tempdir().unwrap();
    gnu_extract(&full, at_full.path());
    assert_same_tree(&site, at_full.path());

    // A day of changes.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&site, "edit.txt", b"version 2 is longer");
    let before = fs::metadata(site.join("setback.txt"))
        .unwrap()
        .modified()
        .unwrap();
    write(&site, "setback.txt", b"BBBB");
    fs::File::options()
        .write(true)
        .open(site.join("setback.txt"))
        .unwrap()
        .set_modified(before)
        .unwrap();
    fs::remove_file(site.join("gone.txt")).unwrap();
    fs::remove_dir_all(site.join("old")).unwrap();
    fs::remove_file(site.join("flip")).unwrap();
    write(&site, "flip/now-a-folder.txt", b"folder now");
    fs::set_permissions(site.join("mode.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&site, "new/deep/new.txt", b"new file");
    fs::remove_file(site.join("link")).unwrap();
    symlink("a.txt", site.join("link")).unwrap();

    let mut base = IndexReader::open(&path).unwrap();
    let mut diff = Vec::new();
    let outcome = source
        .write_tar_against(&mut diff, Against::Differential(&mut base))
        .unwrap();
    // keep.txt, the attachment, a.txt and a/b.txt are unchanged; the rest is in the tar.
    assert_eq!(outcome.unchanged_files, 4, "{:?}", outcome.warnings);
    assert_eq!(outcome.unchanged_bytes, 9 + 300_000 + 22 + 8);
    assert!(
        diff.len() < 300_000,
        "the attachment was left out: {} bytes",
        diff.len()
    );
    // The checksum list names every file of the tree, unchanged ones too.
    let mut sums = Vec::new();
    let mut list = outcome.checksums;
    list.write_to(&mut sums).unwrap();
    let sums = String::from_utf8(sums).unwrap();
    for name in [
        "keep.txt",
        "big/attachment.bin",
        "edit.txt",
        "new/deep/new.txt",
    ] {
        assert!(sums.contains(&format!("  {name}\n")), "{name} in {sums}");
    }
    assert!(!sums.contains("gone.txt"));

    // Stock GNU tar: the full, then the differential, each with -G, gives the tree as it is.
    gnu_extract(&diff, at_full.path());
    assert_same_tree(&site, at_full.path());
    // And coffer's own extraction applies the same deletions.
    let ours = tempfile::tempdir().unwrap();
    coffer::archive::extract(full.as_slice(), ours.path()).unwrap();
    let summary = coffer::archive::extract(diff.as_slice(), ours.path()).unwrap();
    assert_eq!(
        summary.counts.files, 5,
        "the changed and new files: {summary:?}"
    );
    assert_same_tree(&site, ours.path());
    // Without -G the deletions are not applied: the doc must say -G.
    let plain = tempfile::tempdir().unwrap();
    for tar in [&full, &diff] {
        let file = plain.path().with_extension("plain.tar");
        fs::write(&file, tar).unwrap();
        let ok = Command::new("tar")
            .arg("-xpf")
            .arg(&file)
            .arg("-C")
            .arg(plain.path())
            .status()
            .unwrap();
        // The file turned folder makes plain tar fail on the second archive, or leave stale
        // entries; either way it is not the tree.
        if !ok.success() {
            break;
        }
    }
    assert!(plain.path().join("gone.txt").exists());
}
