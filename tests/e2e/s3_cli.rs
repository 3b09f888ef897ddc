//! The CLI against a real S3 server (moto, authentication on, the README's
//! least-privilege policy) beside Azurite and the local tier: one run to all
//! three, S3 objects read back by boto3 that `sha256sum -c` accepts,
//! `restore --from s3`, catalog verification, prune, the server gone mid-run
//! (that sink fails, nothing half-done is listed, no multipart upload stays
//! open), wrong credentials, and the no-silent-overwrite rule.

use std::process::Stdio;

use backup_core::sink::Sink;
use backup_testkit::remote::{
    Remote, assert_wrong_credentials_refused, rows_per_sink, wait_for_open_upload,
};
use backup_testkit::testkit::{Project, output_text, require_tool, sh};

#[test]
fn several_databases_to_local_azurite_and_s3_at_once_then_boto3_check_and_restore_from_s3() {
    require_tool("sha256sum");
    require_tool("sqlite3");
    let s3 = Remote::s3();
    let az = Remote::azure();
    let p = Project::new();
    for name in ["alpha", "beta", "gamma"] {
        p.demo_db(&format!("{name}.db"), 400_000);
    }
    p.write_config(&format!(
        "[[database]]\nlabel = \"alpha\"\npath = \"alpha.db\"\nrequired_tables = [\"tasks\"]\n\n[[database]]\nlabel = \"beta\"\npath = \"beta.db\"\n\n[[database]]\nlabel = \"gamma\"\npath = \"gamma.db\"\n\n{}\n{}",
        az.section(""),
        s3.section("")
    ));

    let dry = s3.run_ok(&p, &["backup", "--dry-run"]);
    assert!(dry.contains("s3://backups/sqlite/"), "{dry}");

    let out = s3.run_ok(&p, &["backup"]);
    assert!(out.contains("3 ok, 0 failed"), "{out}");
    // 3 databases × 3 sinks × (artifact + sidecar) + 3 manifests + 3 sidecars.
    assert!(out.contains("objects written 24/24"), "{out}");

    // S3's manifest lists the three; boto3 downloads them and sha256sum agrees.
    let listed = s3.listed();
    assert_eq!(listed.len(), 3);
    let dl = p.join("download");
    std::fs::create_dir_all(&dl).unwrap();
    for l in &listed {
        s3.download_checked(&l.entry, &dl);
    }

    // `list` shows every sink; the catalog verifies on all of them.
    let list = s3.run_ok(&p, &["list", "--json"]);
    let rows = rows_per_sink(&list);
    for sink in ["local", "azure", "s3"] {
        assert_eq!(rows.get(sink), Some(&3), "{sink}: {list}");
    }
    let verified = s3.run_ok(&p, &["verify", "--catalog"]);
    assert!(verified.contains("s3"), "{verified}");
    s3.run_ok(&p, &["verify", "--latest", "alpha"]);

    // Restore from S3 alone gives a database that passes integrity_check.
    let out = s3.run_ok(
        &p,
        &["restore", "alpha", "--from", "s3", "--to", "restored.db"],
    );
    assert!(out.contains("sink s3"), "{out}");
    assert_eq!(
        sh(p.path(), "sqlite3 restored.db 'PRAGMA integrity_check;'").trim(),
        "ok"
    );
}

#[test]
fn overwrite_needs_the_template_to_allow_it_and_prune_deletes_exactly_the_planned_objects() {
    let s3 = Remote::s3();
    let p = Project::new();
    p.demo_db("app.db", 200_000);
    // A template that names two runs of one day alike is refused…
    p.write_config(&format!(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n{}",
        s3.section("template = \"{date}/{label}{ext}\"\n")
    ));
    let out = s3.run(&p, &["backup"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("[s3] template"), "{text}");

    // …and a conditional create of an existing key fails at the server.
    let sink = s3.sink();
    sink.put_if_absent("claims/x", b"one").unwrap();
    assert!(
        sink.put_if_absent("claims/x", b"two")
            .unwrap_err()
            .is_already_exists()
    );
    assert_eq!(
        backup_core::sink::get_bytes(&sink, "claims/x").unwrap(),
        b"one"
    );
    sink.delete("claims/x").unwrap();

    s3.assert_prune_deletes_exactly_the_planned_objects(&p);
}

#[test]
fn s3_gone_mid_run_fails_that_sink_only_and_leaves_no_open_upload() {
    let mut s3 = Remote::s3();
    let az = Remote::azure();
    let p = Project::new();
    p.demo_db("big.db", 30_000_000);
    p.write_config(&format!(
        "[[database]]\nlabel = \"big\"\npath = \"big.db\"\n\n[compression]\nformat = \"none\"\n\n{}\n{}",
        az.section(""),
        s3.section("abort_incomplete_after_hours = 0\n")
    ));
    let child = s3
        .command(&p, &["backup"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Take S3 away once its multipart upload is open on the server.
    wait_for_open_upload(&s3.sink());
    s3.stop();
    let out = child.wait_with_output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("sink s3"),
        "the failure must name the sink:\n{text}"
    );
    assert!(!text.contains(s3.moto().secret_access_key()), "{text}");

    // The writer could not abort without a server: boto3 sees the upload.
    assert_eq!(s3.open_uploads().len(), 1);
    s3.restart();

    // Local and Azure have the backup; S3 lists nothing of that run.
    assert_eq!(p.catalog().len(), 1, "local must have the backup");
    assert_eq!(az.listed().len(), 1, "azure must have it");
    s3.assert_nothing_half_done();

    // The next run aborts the leftover upload, then succeeds everywhere.
    let out = s3.run_ok(&p, &["backup"]);
    assert!(out.contains("1 ok, 0 failed"), "{out}");
    assert!(
        s3.open_uploads().is_empty(),
        "a multipart upload was left open"
    );
    assert_eq!(s3.listed().len(), 1);
}

#[test]
fn wrong_credentials_are_an_authentication_error_that_never_shows_the_secret() {
    let s3 = Remote::s3();
    let p = Project::new();
    p.demo_db("app.db", 200_000);
    p.write_config(&format!(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n{}",
        s3.section("")
    ));
    let secret = "WrongSecretWrongSecretWrongSecretWrong99";
    let with_wrong = |args: &[&str]| {
        s3.command(&p, args)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap()
    };
    assert_wrong_credentials_refused(with_wrong, "WrongSecret");
}
