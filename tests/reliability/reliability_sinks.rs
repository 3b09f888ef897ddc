//! Sink faults: a sink that fails mid-stream, on finish, on the sidecar, on
//! the manifest; a read-only target folder; a full disk. The database is
//! reported failed for that sink, the other sinks still get the backup, and
//! nothing half-written is listed or left visible in the failing sink.
//!
//! Still to add after the Azure / daemon merges: the same run with Azurite
//! stopped mid-upload (the azure sink fails, local still gets it), and the
//! failure streak counted in `status` after each of these failures.

use std::path::Path;
use std::sync::Arc;

use backup_core::manifest;
use backup_core::pipeline::BackupError;
use backup_core::sink::faults::{Op, fail_after, fail_on};
use backup_core::sink::{Placement, Sink};
use backup_local::LocalSink;
use backup_testkit::faults::{
    self, ReadOnlyDir, TinyDisk, all_files, database, target, temp_files,
};
use backup_testkit::testkit::{Project, output_text};

fn local(name: &str, dir: &Path) -> LocalSink {
    LocalSink::new(name, dir, Placement::Local)
}

/// Listed entries of a sink (and no unreadable manifest).
fn listed(sink: &dyn Sink) -> Vec<String> {
    let (stored, bad) = manifest::read_all(sink).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    manifest::listed(sink, &stored)
        .into_iter()
        .map(|l| l.entry.key)
        .collect()
}

/// Back up one ~1.5 MB database to a healthy sink and a faulty one.
/// Returns the report's errors, and the healthy and faulty folders' files.
fn run_with_faulty(faulty: impl FnOnce(LocalSink) -> Arc<dyn Sink>) -> (Vec<String>, Project) {
    let p = Project::new();
    let db = p.demo_db("app.db", 1_500_000);
    let good = Arc::new(local("good", &p.join("good")));
    let bad = faulty(local("bad", &p.join("bad")));
    let targets = [target(good.clone()), target(bad.clone())];
    let opts = faults::options(&p.join("scratch"));
    let report = faults::run(&[database("app", &db)], &targets, &opts);
    assert_eq!(report.failed_count(), 1, "{:?}", report.outcomes);
    let o = &report.outcomes[0];
    // The healthy sink holds a complete, listed backup.
    assert_eq!(
        o.written
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>(),
        ["good"]
    );
    let keys = listed(good.as_ref());
    assert_eq!(keys.len(), 1);
    assert!(p.join("good").join(&keys[0]).is_file());
    // The faulty sink lists nothing and holds nothing, not even hidden files.
    assert!(listed(bad.as_ref()).is_empty());
    assert_eq!(
        all_files(&p.join("bad")),
        Vec::<String>::new(),
        "the failing sink kept files"
    );
    assert!(temp_files(&p.join("scratch")).is_empty());
    assert!(
        o.errors.iter().all(|e| matches!(
            e,
            BackupError::Sink { sink, .. } | BackupError::Manifest { sink, .. } if sink == "bad"
        )),
        "{o:?}"
    );
    (o.errors.iter().map(|e| e.to_string()).collect(), p)
}

#[test]
fn a_sink_that_fills_up_mid_stream_fails_alone() {
    let (errors, _p) = run_with_faulty(|s| Arc::new(fail_after(s, 64 * 1024)));
    assert!(
        errors.iter().any(|e| e.contains("no space left")),
        "{errors:?}"
    );
}

#[test]
fn a_sink_whose_upload_never_becomes_visible_fails_alone() {
    let (errors, _p) = run_with_faulty(|s| Arc::new(fail_on(s, Op::Finish, "")));
    assert!(
        errors.iter().any(|e| e.contains("finish failed")),
        "{errors:?}"
    );
}

#[test]
fn a_sink_that_refuses_the_upload_fails_alone() {
    for op in [Op::Create, Op::Write] {
        let (errors, _p) = run_with_faulty(|s| Arc::new(fail_on(s, op, "")));
        assert!(errors.iter().any(|e| e.contains("injected")), "{errors:?}");
    }
}

#[test]
fn a_sink_that_loses_the_sidecar_keeps_no_artifact() {
    let (errors, _p) = run_with_faulty(|s| Arc::new(fail_on(s, Op::Put, ".sha256")));
    assert!(
        errors.iter().any(|e| e.contains("put failed")),
        "{errors:?}"
    );
}

#[test]
fn a_sink_that_refuses_the_manifest_keeps_no_artifact() {
    // Without a manifest nothing of the run is a backup in that sink, so its
    // artifact and sidecar must not be left behind as unlisted files.
    let (errors, _p) = run_with_faulty(|s| Arc::new(fail_on(s, Op::Put, "manifests/")));
    assert!(
        errors.iter().any(|e| e.contains("manifest to sink bad")),
        "{errors:?}"
    );
}

#[test]
fn when_every_sink_fails_nothing_is_stored_anywhere() {
    let p = Project::new();
    let db = p.demo_db("app.db", 500_000);
    let a = Arc::new(fail_after(local("a", &p.join("a")), 10_000));
    let b = Arc::new(fail_on(local("b", &p.join("b")), Op::Write, ""));
    let targets = [target(a), target(b)];
    let report = faults::run(
        &[database("app", &db)],
        &targets,
        &faults::options(&p.join("scratch")),
    );
    assert_eq!(report.failed_count(), 1);
    assert!(report.manifests.is_empty());
    assert_eq!(report.written_objects, 0);
    for d in ["a", "b", "scratch"] {
        assert_eq!(all_files(&p.join(d)), Vec::<String>::new(), "{d}");
    }
}

fn cold_config(p: &Project) {
    p.demo_db("app.db", 1_500_000);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[local]\ncold = \"cold\"\n",
    );
}

fn assert_local_ok_cold_failed(p: &Project, text: &str) {
    assert!(
        text.contains("FAILED") && text.contains("sink cold"),
        "{text}"
    );
    assert_eq!(p.catalog().len(), 1, "the local tier must still get it");
    let cold = LocalSink::new("cold", p.join("cold"), Placement::Cold);
    assert!(listed(&cold).is_empty());
    assert_eq!(
        all_files(&p.join("cold")),
        Vec::<String>::new(),
        "cold tier kept files"
    );
    assert!(temp_files(&p.backups()).is_empty(), "{text}");
}

#[test]
fn a_read_only_cold_folder_fails_that_sink_only_with_exit_1() {
    let p = Project::new();
    cold_config(&p);
    let guard = ReadOnlyDir::new(&p.join("cold"));
    let out = p.run(&["backup", "--tier", "cold"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_local_ok_cold_failed(&p, &text);
    drop(guard);
    // Writable again: the next run puts it everywhere.
    let text = p.run_ok(&["backup", "--tier", "cold"]);
    assert!(text.contains("1 ok, 0 failed"), "{text}");
}

#[test]
fn a_read_only_local_root_still_backs_up_to_the_cold_tier() {
    let p = Project::new();
    cold_config(&p);
    let guard = ReadOnlyDir::new(&p.backups());
    let out = p.run(&["backup", "--tier", "cold"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAILED") && text.contains("sink local"),
        "{text}"
    );
    let cold = LocalSink::new("cold", p.join("cold"), Placement::Cold);
    assert_eq!(
        listed(&cold).len(),
        1,
        "cold tier must still get it: {text}"
    );
    assert!(temp_files(&p.join("cold")).is_empty());
    drop(guard);
    assert!(all_files(&p.backups()).is_empty());
}

#[test]
fn a_full_disk_fails_that_sink_only() {
    let p = Project::new();
    cold_config(&p);
    // ~1.5 MB compresses to ~500 KB: a 128 KiB file system fills mid-stream.
    let Some(disk) = TinyDisk::mount(&p.join("cold"), 128 * 1024) else {
        eprintln!(
            "cannot mount a tmpfs here (not root): the full disk is covered by fail_after in a_sink_that_fills_up_mid_stream_fails_alone"
        );
        return;
    };
    eprintln!("full disk: a 128 KiB tmpfs mounted on the cold folder");
    let out = p.run(&["backup", "--tier", "cold"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("No space left") || text.contains("no space"),
        "{text}"
    );
    assert_local_ok_cold_failed(&p, &text);
    drop(disk);
}
