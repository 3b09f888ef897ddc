//! The shipped binary must have SQLite's fast paths: `sqlite_dbpage`
//! (WAL databases stream their pages, no scratch copy) and snapshots (the
//! post-backup check reads the same snapshot; runs read only the pages the
//! WAL names). The bundled SQLite gets them from `LIBSQLITE3_FLAGS`, which
//! this workspace sets in `.cargo/config.toml`; `cargo install` from
//! anywhere else does not read that file and would quietly build the slow
//! path, so the build stops and says how instead. The library keeps its
//! fallback for embedders; `SQLITE_BACKUP_ALLOW_SLOW_SQLITE=1` builds the
//! binary without them on purpose.

const NEEDED: [&str; 2] = ["SQLITE_ENABLE_DBPAGE_VTAB", "SQLITE_ENABLE_SNAPSHOT"];

fn main() {
    println!("cargo::rerun-if-env-changed=LIBSQLITE3_FLAGS");
    println!("cargo::rerun-if-env-changed=SQLITE_BACKUP_ALLOW_SLOW_SQLITE");
    let flags = std::env::var("LIBSQLITE3_FLAGS").unwrap_or_default();
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|n| {
            !flags
                .split_whitespace()
                .any(|f| f.trim_start_matches("-D") == *n)
        })
        .collect();
    if missing.is_empty() || std::env::var_os("SQLITE_BACKUP_ALLOW_SLOW_SQLITE").is_some() {
        return;
    }
    panic!(
        "\n\nsqlite-backup needs the bundled SQLite built with {}.\n\
         Build or install it with:\n\n  \
         LIBSQLITE3_FLAGS=\"-DSQLITE_ENABLE_DBPAGE_VTAB -DSQLITE_ENABLE_SNAPSHOT\" cargo install ...\n\n\
         (inside this repository .cargo/config.toml sets it). To build the slower\n\
         fallback on purpose, set SQLITE_BACKUP_ALLOW_SLOW_SQLITE=1.\n",
        missing.join(" and ")
    );
}
