//! Smoke test of the binary itself, and of the test kit finding it.

use std::process::Command;

#[test]
fn version_and_help_work() {
    let bin = env!("CARGO_BIN_EXE_sqlite-backup");
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.starts_with("sqlite-backup "), "{version}");
    // What a bug report needs: the linked SQLite and whether this build has
    // the fast paths (this workspace compiles them in).
    assert!(
        version.contains(&format!("SQLite {}", backup_core::sqlite::build().version))
            && version.contains("sqlite_dbpage: yes, snapshots: yes"),
        "{version}"
    );
    let out = Command::new(bin)
        .arg("backup")
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"));
}

#[test]
fn the_test_kit_runs_the_binary_cargo_built_for_these_tests() {
    let ours = std::fs::canonicalize(env!("CARGO_BIN_EXE_sqlite-backup")).unwrap();
    let kit = std::fs::canonicalize(backup_testkit::testkit::binary()).unwrap();
    assert_eq!(ours, kit);
}

/// The released binary must not link test code: the test kit turns on the
/// `testing` features (fault-injecting sinks, the conformance suite, the
/// Azurite key) and is unpublished, so `cargo package` would fail too.
/// `cargo tree` reads only the lock file, so this costs about a second and
/// needs no release build.
#[test]
fn the_shipped_binary_depends_on_no_test_code() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "-p", "backup-cli", "-e", "normal,build,features"])
        .args(["--prefix", "none", "--color", "never"])
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.contains("backup-core v"), "unexpected output:\n{tree}");
    let test_code: Vec<&str> = tree
        .lines()
        .filter(|l| {
            l.starts_with("backup-testkit")
                || (l.starts_with("backup-") && l.contains("feature \"testing\""))
        })
        .collect();
    assert!(
        test_code.is_empty(),
        "backup-cli's normal dependencies pull in test code:\n{}",
        test_code.join("\n")
    );
}

/// Every command's help teaches by example.
#[test]
fn every_command_has_examples_in_its_help() {
    let bin = env!("CARGO_BIN_EXE_sqlite-backup");
    for cmd in [
        "backup",
        "list",
        "verify",
        "check",
        "restore",
        "prune",
        "status",
        "drill",
        "report",
        "daemon",
        "schedule print",
        "catalog head",
        "catalog anchor",
        "catalog repair",
        "demo",
        "completions",
        "man",
    ] {
        let out = Command::new(bin)
            .args(cmd.split(' '))
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("\nExample"),
            "`{cmd} --help` has no example:\n{help}"
        );
    }
}
