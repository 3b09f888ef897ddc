//! Smoke test of the binary itself, and of the test kit finding it.

use std::process::Command;

#[test]
fn version_and_help_work() {
    let bin = env!("CARGO_BIN_EXE_sqlite-backup");
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sqlite-backup "));
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
