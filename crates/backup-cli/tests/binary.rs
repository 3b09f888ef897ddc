//! Smoke test of the binary itself. Having an integration test here also
//! makes `cargo test --workspace` build the real `sqlite-backup` binary that
//! the end-to-end tests in the root package run.

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
