//! `coffer init`: a working, commented config for folders, a site or a whole bench, the
//! host's signing key, and the checks, in one non-interactive command.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Env, assert_same_tree, rich_site};

#[test]
fn init_writes_a_config_that_backs_up_and_restores_and_never_overwrites_one() {
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let config = env.path("etc/coffer.toml");
    let key = env.path("identity-to-move.txt");
    let store = env.path("store");
    let state = env.path("state");
    let args = [
        "init",
        "--dir",
        site.to_str().unwrap(),
        "--store",
        &format!("local:{}", store.display()),
        "--generate-key",
        key.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let out = env.run(&config, &args);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("trusted_signers") && said.contains("ssh-ed25519 "),
        "{said}"
    );
    assert!(
        said.contains("checks passed") && said.contains("left to do"),
        "{said}"
    );
    assert!(said.contains("[alerts]"), "{said}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("MOVE IT OFF THIS HOST"));
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&config), 0o640);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&state), 0o700);
    assert!(state.join("signing-key").exists());
    let text = fs::read_to_string(&config).unwrap();
    for section in [
        "[retention]",
        "[jobs.backup]",
        "[jobs.verify]",
        "# [alerts]",
        "[[source]]",
    ] {
        assert!(text.contains(section), "{section} in {text}");
    }

    // It works as written: a backup, and a restore with the identity it made.
    let id = env.backup(&config);
    let to = env.path("restored");
    env.ok(
        &config,
        &[
            "restore",
            &id,
            "--to",
            to.to_str().unwrap(),
            "--identity",
            key.to_str().unwrap(),
        ],
    );
    assert_same_tree(&site, &to);

    // Never over an existing config; --force replaces it (and keeps the signing key).
    let before = fs::read(state.join("signing-key")).unwrap();
    let out = env.fails(&config, &args[..args.len() - 4]);
    assert!(
        out.contains("never overwrites") && out.contains("--force"),
        "{out}"
    );
    let recipient = env.recipient.clone();
    env.ok(
        &config,
        &[
            "init",
            "--dir",
            site.to_str().unwrap(),
            "--store",
            &format!("local:{}", store.display()),
            "--recipient",
            &recipient,
            "--state-dir",
            state.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(fs::read_to_string(&config).unwrap().contains(&recipient));
    assert_eq!(fs::read(state.join("signing-key")).unwrap(), before);
}

#[test]
fn init_of_a_bench_makes_one_frappe_bench_source_and_refuses_what_it_cannot_use() {
    let env = Env::new();
    let bench = env.path("frappe-bench");
    for site in ["erp.example.com", "shop.example.com"] {
        let dir = bench.join("sites").join(site);
        fs::create_dir_all(dir.join("public/files")).unwrap();
        fs::write(dir.join("site_config.json"), r#"{"db_name": "x"}"#).unwrap();
    }
    // Not a site: no site_config.json.
    fs::create_dir_all(bench.join("sites/assets")).unwrap();
    let config = env.path("bench.toml");
    let store = format!("local:{}", env.path("store").display());
    let state = env.path("state");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "init",
            "--store",
            &store,
            "--recipient",
            &env.recipient,
            "--state-dir",
            state.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let args = base(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run(&config, &args)
    };
    // The databases are not reachable here, so the checks fail; the config is written.
    let _ = run(&["--frappe-bench", bench.to_str().unwrap()]);
    let text = fs::read_to_string(&config).unwrap();
    let parsed = coffer::config::Config::load(&config).unwrap();
    // One source for the whole bench (a site added later needs no change), which the
    // backup expands into every site's database and files and the bench's own stream.
    let names: Vec<&str> = parsed.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["frappe-bench"], "{text}");
    assert_eq!(parsed.sources[0].kind_name(), "frappe-bench", "{text}");
    assert!(
        text.contains("Sites now: erp.example.com, shop.example.com."),
        "{text}"
    );
    let expanded: Vec<String> = coffer::backup::expand_sources(&parsed.sources)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        expanded,
        [
            "erp_example_com-db",
            "erp_example_com-files",
            "shop_example_com-db",
            "shop_example_com-files",
            "frappe-bench"
        ],
        "{text}"
    );

    // What it cannot use is refused, and nothing is written.
    let other = env.path("other.toml");
    for (extra, says) in [
        (vec!["--dir", "/nonexistent/x"], "not a folder"),
        (vec![], "name what to back up"),
    ] {
        let mut args = base(&extra);
        args[0] = "init".into();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.fails(&other, &args);
        assert!(out.contains(says), "{out}");
        assert!(!other.exists());
    }
    let out = env.fails(
        &other,
        &[
            "init",
            "--dir",
            bench.to_str().unwrap(),
            "--store",
            "s3:bucket",
            "--recipient",
            &env.recipient,
        ],
    );
    assert!(out.contains("local:/path/to/store"), "{out}");
    let out = env.fails(
        &other,
        &[
            "init",
            "--dir",
            bench.to_str().unwrap(),
            "--store",
            &store,
            "--recipient",
            "age1nope",
        ],
    );
    assert!(out.contains("not an age public key"), "{out}");
    assert!(!other.exists());
}
