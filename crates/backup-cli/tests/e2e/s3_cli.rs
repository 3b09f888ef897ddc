//! The CLI against a real S3 server (moto, authentication on, the README's
//! least-privilege policy) beside Azurite and the local tier: one run to all
//! three, S3 objects read back by boto3 that `sha256sum -c` accepts,
//! `restore --from s3`, catalog verification, prune, the server gone mid-run
//! (that sink fails, nothing half-done is listed, no multipart upload stays
//! open), wrong credentials, and the no-silent-overwrite rule.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use backup_core::manifest;
use backup_core::sink::Sink;
use backup_testkit::azurite::Azurite;
use backup_testkit::moto::Moto;
use backup_testkit::testkit::{Project, output_text, require_tool, sh};

fn moto() -> Moto {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    moto.create_bucket("backups")
        .unwrap_or_else(|e| panic!("{e}"));
    moto
}

fn azurite() -> Azurite {
    let az = Azurite::start().unwrap_or_else(|e| panic!("{e}"));
    az.create_container("backups").unwrap();
    az
}

fn azure_section(az: &Azurite) -> String {
    format!(
        "[azure]\ncontainer = \"backups\"\nuse_emulator = true\nendpoint = \"{}\"\nmax_retries = 1\npart_size_mib = 1\n",
        az.account_endpoint()
    )
}

/// The binary with the test user's AWS credentials in its environment.
fn command(p: &Project, moto: &Moto, args: &[&str]) -> Command {
    let mut c = p.command(args);
    c.env_remove("AWS_PROFILE").env("HOME", p.path());
    for (k, v) in moto.env() {
        c.env(k, v);
    }
    c
}

fn run(p: &Project, moto: &Moto, args: &[&str]) -> Output {
    command(p, moto, args).output().expect("run sqlite-backup")
}

fn run_ok(p: &Project, moto: &Moto, args: &[&str]) -> String {
    let out = run(p, moto, args);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{args:?} failed:\n{text}");
    assert!(
        !text.contains(moto.secret_access_key()),
        "{args:?} leaked the secret:\n{text}"
    );
    text
}

fn s3_sink(moto: &Moto) -> backup_s3::S3Sink {
    backup_s3::S3Sink::from_config(&moto.sink_config("backups")).unwrap()
}

#[test]
fn several_databases_to_local_azurite_and_s3_at_once_then_boto3_check_and_restore_from_s3() {
    require_tool("sha256sum");
    require_tool("sqlite3");
    let moto = moto();
    let az = azurite();
    let p = Project::new();
    for name in ["alpha", "beta", "gamma"] {
        p.demo_db(&format!("{name}.db"), 400_000);
    }
    p.write_config(&format!(
        "[[database]]\nlabel = \"alpha\"\npath = \"alpha.db\"\nrequired_tables = [\"tasks\"]\n\n[[database]]\nlabel = \"beta\"\npath = \"beta.db\"\n\n[[database]]\nlabel = \"gamma\"\npath = \"gamma.db\"\n\n{}\n{}",
        azure_section(&az),
        moto.section("backups", "")
    ));

    let dry = run_ok(&p, &moto, &["backup", "--dry-run"]);
    assert!(dry.contains("s3://backups/sqlite/"), "{dry}");

    let out = run_ok(&p, &moto, &["backup"]);
    assert!(out.contains("3 ok, 0 failed"), "{out}");
    // 3 databases × 3 sinks × (artifact + sidecar) + 3 manifests + 3 sidecars.
    assert!(out.contains("objects written 24/24"), "{out}");

    // S3's manifest lists the three; boto3 downloads them and sha256sum agrees.
    let sink = s3_sink(&moto);
    let (stored, bad) = manifest::read_all(&sink).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let listed = manifest::listed(&sink, &stored);
    assert_eq!(listed.len(), 3);
    let dl = p.join("download");
    std::fs::create_dir_all(&dl).unwrap();
    for l in &listed {
        for key in [&l.entry.key, &l.entry.sidecar_key] {
            let name = backup_core::naming::file_name(key);
            moto.boto3(
                "s3.download_file('backups', sys.argv[1], sys.argv[2])",
                &[&format!("sqlite/{key}"), dl.join(name).to_str().unwrap()],
            )
            .unwrap();
        }
        let name = backup_core::naming::file_name(&l.entry.key);
        let ok = sh(&dl, &format!("sha256sum -c '{name}.sha256'"));
        assert!(ok.trim().ends_with(": OK"), "{ok}");
    }

    // `list` shows every sink; the catalog verifies on all of them.
    let rows: serde_json::Value =
        serde_json::from_str(&run_ok(&p, &moto, &["list", "--json"])).unwrap();
    for sink in ["local", "azure", "s3"] {
        let n = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["sink"] == sink)
            .count();
        assert_eq!(n, 3, "{sink}: {rows}");
    }
    let verified = run_ok(&p, &moto, &["verify", "--catalog"]);
    assert!(verified.contains("s3"), "{verified}");
    run_ok(&p, &moto, &["verify", "--latest", "alpha"]);

    // Restore from S3 alone gives a database that passes integrity_check.
    let out = run_ok(
        &p,
        &moto,
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
    let moto = moto();
    let p = Project::new();
    p.demo_db("app.db", 200_000);
    let db = "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n";
    // A template that names two runs of one day alike is refused…
    p.write_config(&format!(
        "{db}{}",
        moto.section("backups", "template = \"{date}/{label}{ext}\"\n")
    ));
    let out = run(&p, &moto, &["backup"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("[s3] template"), "{text}");

    // …and a conditional create of an existing key fails at the server.
    let sink = s3_sink(&moto);
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

    // Prune on S3 deletes the planned objects and nothing else.
    p.write_config(&format!(
        "{db}[retention]\nhot_days = 0\nwarm_days = 0\n\n{}",
        moto.section("backups", "")
    ));
    for _ in 0..3 {
        run_ok(&p, &moto, &["backup"]);
        std::thread::sleep(Duration::from_millis(1100)); // distinct {time} names
    }
    let listed = |s: &dyn Sink| {
        let (stored, _) = manifest::read_all(s).unwrap();
        manifest::listed(s, &stored)
    };
    let before = listed(&sink);
    assert_eq!(before.len(), 3);
    let objects_before: std::collections::BTreeSet<String> =
        sink.list("").unwrap().into_iter().collect();
    run_ok(&p, &moto, &["prune"]);
    let after = listed(&sink);
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].entry.key, before[0].entry.key,
        "the newest survives"
    );
    let objects_after: std::collections::BTreeSet<String> =
        sink.list("").unwrap().into_iter().collect();
    let removed: std::collections::BTreeSet<String> =
        objects_before.difference(&objects_after).cloned().collect();
    let planned: std::collections::BTreeSet<String> = before[1..]
        .iter()
        .flat_map(|l| [l.entry.key.clone(), l.entry.sidecar_key.clone()])
        .collect();
    assert_eq!(removed, planned);
}

#[test]
fn s3_gone_mid_run_fails_that_sink_only_and_leaves_no_open_upload() {
    let mut moto = moto();
    let az = azurite();
    let p = Project::new();
    p.demo_db("big.db", 30_000_000);
    p.write_config(&format!(
        "[[database]]\nlabel = \"big\"\npath = \"big.db\"\n\n[compression]\nformat = \"none\"\n\n{}\n{}",
        azure_section(&az),
        moto.section("backups", "abort_incomplete_after_hours = 0\n")
    ));
    let child = command(&p, &moto, &["backup"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Take S3 away once its multipart upload is open on the server.
    let sink = s3_sink(&moto);
    let started = Instant::now();
    while sink.incomplete_uploads().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the S3 upload never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    moto.stop();
    let out = child.wait_with_output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("sink s3"),
        "the failure must name the sink:\n{text}"
    );
    assert!(!text.contains(moto.secret_access_key()), "{text}");

    // The writer could not abort without a server: boto3 sees the upload.
    assert_eq!(moto.open_multipart_uploads("backups").unwrap().len(), 1);
    moto.restart().unwrap();

    // Local and Azure have the backup; S3 lists nothing of that run.
    assert_eq!(p.catalog().len(), 1, "local must have the backup");
    let azure = backup_azure::AzureSink::from_config(&az.sink_config("backups")).unwrap();
    let (stored, _) = manifest::read_all(&azure).unwrap();
    assert_eq!(
        manifest::listed(&azure, &stored).len(),
        1,
        "azure must have it"
    );
    let (stored, _) = manifest::read_all(&sink).unwrap();
    assert!(
        manifest::listed(&sink, &stored).is_empty(),
        "half run listed"
    );
    assert!(
        sink.list("").unwrap().iter().all(|k| !k.ends_with(".db")),
        "{:?}",
        sink.list("").unwrap()
    );

    // The next run aborts the leftover upload, then succeeds everywhere.
    let out = run_ok(&p, &moto, &["backup"]);
    assert!(out.contains("1 ok, 0 failed"), "{out}");
    assert!(
        moto.open_multipart_uploads("backups").unwrap().is_empty(),
        "a multipart upload was left open"
    );
    let (stored, _) = manifest::read_all(&sink).unwrap();
    assert_eq!(manifest::listed(&sink, &stored).len(), 1);
}

#[test]
fn wrong_credentials_are_an_authentication_error_that_never_shows_the_secret() {
    let moto = moto();
    let p = Project::new();
    p.demo_db("app.db", 200_000);
    p.write_config(&format!(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n{}",
        moto.section("backups", "")
    ));
    let secret = "WrongSecretWrongSecretWrongSecretWrong99";
    let with_wrong = |args: &[&str]| {
        let out = command(&p, &moto, args)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap();
        let text = output_text(&out);
        assert!(
            !text.contains("WrongSecret"),
            "{args:?} leaked the secret:\n{text}"
        );
        (out.status.code(), text)
    };
    let (code, text) = with_wrong(&["backup"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
    for args in [
        &["list"][..],
        &["backup", "--dry-run"],
        &["verify", "--latest", "app"],
    ] {
        with_wrong(args);
    }
}
