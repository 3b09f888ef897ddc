//! Helpers for the reliability tests (`tests/reliability*`): seeded
//! randomness that prints its seed, byte-level damage, read-only and tiny
//! (full) folders, leftover-file scans, and a library-level backup run.
//!
//! Every random choice comes from one seed. A failing run prints
//! `seed=N`; rerun with `SQLITE_BACKUP_SEED=N` to reproduce it exactly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::demo::Rng;
use backup_core::Database;
use backup_core::naming::Template;
use backup_core::pipeline::{self, Options, RunReport, Target};
use backup_core::sink::Sink;

/// The seed for a test: `SQLITE_BACKUP_SEED` if set, else `default`.
/// Printed either way so a failure can be replayed.
pub fn seed(test: &str, default: u64) -> u64 {
    let seed = std::env::var("SQLITE_BACKUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("{test}: seed={seed} (rerun with SQLITE_BACKUP_SEED={seed})");
    seed
}

/// One way to damage a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// XOR the byte at `at` with `mask` (never 0).
    Flip {
        /// Offset.
        at: usize,
        /// XOR mask.
        mask: u8,
    },
    /// Keep only the first `len` bytes.
    Truncate {
        /// New length.
        len: usize,
    },
}

impl Damage {
    /// A random flip or truncation of a `len`-byte file (`len` > 0).
    pub fn random(rng: &mut Rng, len: usize) -> Self {
        if rng.below(2) == 0 {
            Damage::Flip {
                at: rng.below(len as u64) as usize,
                mask: 1 + rng.below(255) as u8,
            }
        } else {
            Damage::Truncate {
                len: rng.below(len as u64) as usize,
            }
        }
    }

    /// Apply to bytes.
    pub fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        match *self {
            Damage::Flip { at, mask } => {
                let mut b = bytes.to_vec();
                b[at] ^= mask;
                b
            }
            Damage::Truncate { len } => bytes[..len].to_vec(),
        }
    }
}

/// Library-level backup options writing scratch files into `scratch`.
pub fn options(scratch: &Path) -> Options {
    Options {
        scratch_dir: scratch.to_path_buf(),
        ..Options::default()
    }
}

/// A database entry as the config would make it.
pub fn database(label: &str, path: &Path) -> Database {
    Database::new(label, path).require_tables(["tasks"])
}

/// A target with the default local template.
pub fn target(sink: Arc<dyn Sink>) -> Target {
    Target {
        sink,
        template: Template::parse(backup_core::naming::DEFAULT_LOCAL_TEMPLATE, false)
            .expect("default template"),
        cold_only: false,
    }
}

/// Plan and execute one run through the library.
pub fn run(databases: &[Database], targets: &[Target], opts: &Options) -> RunReport {
    let plan = pipeline::plan(databases, targets, opts, jiff::Timestamp::now());
    pipeline::execute(&plan, &pipeline::Silent)
}

/// The furthest phase a killed process reached: the phase of the first of
/// `markers` (log text, phase name; latest phase first) found in its log,
/// else `0 startup`.
pub fn furthest_phase(log: &str, markers: &[(&str, &'static str)]) -> &'static str {
    markers
        .iter()
        .find(|(marker, _)| log.contains(marker))
        .map_or("0 startup", |(_, phase)| phase)
}

/// Every file below `dir` (hidden ones included), relative, sorted.
pub fn all_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).expect("below dir");
            rel.to_string_lossy().into_owned()
        })
        .collect();
    out.sort();
    out
}

/// Temporary files below `dir`: partial uploads and snapshot scratch files.
pub fn temp_files(dir: &Path) -> Vec<String> {
    all_files(dir)
        .into_iter()
        .filter(|f| f.contains(".partial-") || f.starts_with(".tmp/"))
        .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn mount_tmpfs(dir: &Path, opts: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A folder nobody can write to while this guard lives. As root (where
/// permission bits do not stop writes) it is a read-only tmpfs mount, or
/// failing that an immutable folder (`chattr +i`); otherwise mode 0555.
pub struct ReadOnlyDir {
    path: PathBuf,
    how: &'static str,
}

impl ReadOnlyDir {
    /// Make `path` (created if needed) read-only.
    pub fn new(path: &Path) -> Self {
        std::fs::create_dir_all(path).expect("create folder");
        let how = if !is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555))
                .expect("chmod 0555");
            "chmod 0555"
        } else if mount_tmpfs(path, "ro,size=64k") {
            "read-only tmpfs mount"
        } else {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "running as root and neither `mount -t tmpfs -o ro` nor `chattr +i` works here: cannot make a read-only folder"
            );
            "chattr +i"
        };
        // Prove it: a write must fail.
        assert!(
            std::fs::write(path.join("probe"), b"x").is_err(),
            "{} did not make {} read-only",
            how,
            path.display()
        );
        eprintln!("read-only folder {} ({how})", path.display());
        Self {
            path: path.to_path_buf(),
            how,
        }
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        match self.how {
            "read-only tmpfs mount" => {
                let _ = Command::new("umount").arg(&self.path).status();
            }
            "chattr +i" => {
                let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
            }
            _ => {
                use std::os::unix::fs::PermissionsExt;
                let _ =
                    std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755));
            }
        }
    }
}

/// A really full disk: a tmpfs of `bytes` mounted at `path` (root only).
/// `None` when mounting is not possible here (the caller says so and falls
/// back to [`backup_core::sink::faults::fail_after`]).
pub struct TinyDisk {
    path: PathBuf,
}

impl TinyDisk {
    /// Mount a `bytes`-sized tmpfs at `path`, if this machine lets us.
    pub fn mount(path: &Path, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(path).ok()?;
        (is_root() && mount_tmpfs(path, &format!("size={bytes}"))).then(|| Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
