//! The scratch and partial files of a backup, a verify and a restore are
//! `0600` (their folders `0700`) from creation, observed while they are
//! written, under the usual `umask 022` and under `umask 000` (where
//! anything created without an explicit mode would be world-readable).
//!
//! A sink wrapper looks at every file and folder below the watched folders
//! on each read or write the engine makes through it, so every scratch
//! file that exists while data flows is seen. One test in its own binary:
//! the umask is per process.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use backup_core::fsutil::Modes;
use backup_core::sink::faults::{Hooked, Op};
use backup_core::{Backups, Database, SnapshotMethod};
use backup_local::LocalSink;

/// Every path ever seen below the watched folders: a folder?, the modes it had.
type Seen = Arc<Mutex<BTreeMap<PathBuf, (bool, Vec<u32>)>>>;

fn look(watch: &[PathBuf], seen: &Seen) {
    fn walk(dir: &Path, seen: &mut BTreeMap<PathBuf, (bool, Vec<u32>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            let (is_dir, modes) = seen.entry(e.path()).or_default();
            *is_dir = meta.is_dir();
            if !modes.contains(&mode) {
                modes.push(mode);
            }
            if meta.is_dir() {
                walk(&e.path(), seen);
            }
        }
    }
    let mut seen = seen.lock().unwrap();
    for w in watch {
        walk(w, &mut seen);
    }
}

/// `sink`, looking below `watch` on every read and write the engine makes
/// through it (and before each upload becomes visible).
fn spy(sink: LocalSink, watch: Vec<PathBuf>, seen: Seen) -> Hooked<LocalSink> {
    Hooked::new(sink).with_hook(move |op, _, _| {
        if matches!(op, Op::Write | Op::Finish | Op::Read) {
            look(&watch, &seen);
        }
        Ok(())
    })
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Scratch names: snapshot copies and verification copies (in `.tmp`),
/// partial files of the sink and of a restore (`.<name>.partial-<pid>`).
fn is_scratch(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.contains("/.tmp/") || s.ends_with("/.tmp") || s.contains(".partial-")
}

fn scenario(umask: u32, source_mode: u32) {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let src = dir.path().join("app.db");
    backup_testkit::demo::create(&src, 2_000_000, 7).unwrap();
    chmod(&src, source_mode);
    let root = dir.path().join("backups");
    let restore_dir = dir.path().join("restored");
    let seen: Seen = Arc::default();
    let modes = Modes::of_source(&src).unwrap();
    let spy = spy(
        LocalSink::folder(&root).with_modes(modes),
        vec![root.clone(), restore_dir.clone()],
        seen.clone(),
    );
    spy.inner().ensure_root().unwrap();
    // VACUUM INTO: the snapshot goes through a scratch file in `.tmp`.
    let backups = Backups::builder()
        .sink(spy.clone())
        .snapshot_method(SnapshotMethod::VacuumInto)
        .scratch_dir(root.join(".tmp"))
        .build();
    let app = Database::new("app", &src);
    let backed_up = backups.backup(&app).unwrap();
    backups.verify_latest(&app).unwrap();
    std::fs::create_dir(&restore_dir).unwrap();
    chmod(&restore_dir, 0o755);
    let to = restore_dir.join("sub/new.db");
    backups.restore(&app).to(&to).run().unwrap();

    let seen = seen.lock().unwrap();
    let label = format!("umask {umask:03o}, source {source_mode:04o}");
    // The snapshot copy, the verification copy, the sink's and the
    // restore's partial files were all seen while data flowed.
    let scratch: Vec<_> = seen.iter().filter(|(p, _)| is_scratch(p)).collect();
    for (what, pat) in [
        ("snapshot scratch", "/.tmp/.app-"),
        ("verification scratch", "/candidate.db"),
        ("sink partial", ".db.zst.partial-"),
        ("restore partial", "/sub/.new.db.partial-"),
    ] {
        assert!(
            scratch
                .iter()
                .any(|(p, _)| p.to_string_lossy().contains(pat)),
            "{label}: no {what} seen: {scratch:?}"
        );
    }
    let octal = |m: &[u32]| {
        m.iter()
            .map(|m| format!("{m:04o}"))
            .collect::<Vec<_>>()
            .join("→")
    };
    for (p, (is_dir, modes)) in &scratch {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(
            modes.as_slice(),
            &[want],
            "{label}: {} was {}",
            p.display(),
            octal(modes)
        );
    }
    // Everything else below the backup folder, from the moment it was seen.
    for (p, (is_dir, got)) in seen
        .iter()
        .filter(|(p, _)| !is_scratch(p) && p.starts_with(&root))
    {
        let want = if *is_dir { modes.dir } else { modes.file };
        assert_eq!(
            got.as_slice(),
            &[want],
            "{label}: {} was {}",
            p.display(),
            octal(got)
        );
    }
    assert_eq!(mode(&root), modes.dir, "{label}");
    let (_, entry) = &backed_up.copies[0];
    assert_eq!(entry.source_mode, Some(source_mode), "{label}");
    assert_eq!(mode(&root.join(&entry.key)), modes.file, "{label}");
    assert_eq!(mode(&root.join(&entry.sidecar_key)), modes.file, "{label}");
    // The restored copy has the source's mode; the folder made for it is
    // no more open than that.
    assert_eq!(mode(&to), source_mode, "{label}");
    assert_eq!(
        mode(to.parent().unwrap()),
        Modes::from_source(source_mode).dir,
        "{label}"
    );
    let shown: Vec<String> = scratch
        .iter()
        .map(|(p, (_, m))| {
            let name = p.strip_prefix(dir.path()).unwrap().display().to_string();
            format!(
                "{} {}",
                name.replace(&std::process::id().to_string(), "<pid>"),
                octal(m)
            )
        })
        .collect();
    println!("{label}: {}", shown.join(", "));
}

#[test]
fn scratch_and_partial_files_are_private_while_they_exist() {
    for umask in [0o022, 0o000] {
        // SAFETY: the only test in this binary; nothing else runs meanwhile.
        unsafe { libc::umask(umask) };
        for source_mode in [0o600, 0o640, 0o644] {
            scenario(umask, source_mode);
        }
    }
    unsafe { libc::umask(0o022) };
}
