//! Tell the code whether the bundled SQLite is compiled with
//! `SQLITE_ENABLE_SNAPSHOT`: libsqlite3-sys reads the same `LIBSQLITE3_FLAGS`
//! variable in the same cargo invocation (this workspace sets it in
//! `.cargo/config.toml`). Without the flag the `sqlite3_snapshot_*` symbols do
//! not exist, so the code that calls them must not be compiled.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sqlite_snapshot)");
    println!("cargo::rerun-if-env-changed=LIBSQLITE3_FLAGS");
    let flags = std::env::var("LIBSQLITE3_FLAGS").unwrap_or_default();
    let enabled = flags
        .split_whitespace()
        .any(|f| f.trim_start_matches("-D") == "SQLITE_ENABLE_SNAPSHOT");
    if enabled {
        println!("cargo::rustc-cfg=sqlite_snapshot");
    }
}
