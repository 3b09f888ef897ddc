//! The CLI against a real Azurite: one run to local + Azure, artifacts that
//! `sha256sum -c` accepts after download, verification from Azure, failure of
//! Azurite mid-run reported per database, wrong keys reported without the key.

use backup_testkit::azurite::Azurite;
use backup_testkit::remote::{ROOT, Remote, assert_wrong_credentials_refused, rows_per_sink};
use backup_testkit::testkit::{Project, output_text, require_tool, sh};

#[test]
fn one_run_to_local_and_azure_then_download_check_and_verify() {
    require_tool("sha256sum");
    require_tool("zstd");
    require_tool("sqlite3");
    let mut az = Remote::azure();
    let p = Project::new();
    for name in ["alpha", "beta", "gamma", "delta"] {
        p.demo_db(&format!("{name}.db"), 1_500_000);
    }
    p.write_config(&format!(
        "[[database]]\nlabel = \"alpha\"\npath = \"alpha.db\"\nrequired_tables = [\"tasks\"]\n\n[[database]]\nlabel = \"beta\"\npath = \"beta.db\"\n\n[[database]]\nlabel = \"gamma\"\npath = \"gamma.db\"\n\n[[database]]\nlabel = \"delta\"\npath = \"delta.db\"\n\n{}",
        az.section("")
    ));

    // Dry run names the blob paths and makes no request (Azurite is stopped meanwhile).
    az.stop();
    let dry = p.run_ok(&["backup", "--dry-run"]);
    assert!(dry.contains("azure://backups/sqlite/"), "{dry}");
    assert!(dry.contains("Expected objects: 20"), "{dry}");
    az.restart();

    let out = p.run_ok(&["backup"]);
    // 4 databases × 2 sinks × (artifact + sidecar) + 2 manifests + their 2 sidecars.
    assert!(out.contains("4 ok, 0 failed"), "{out}");
    assert!(out.contains("objects written 20/20"), "{out}");

    let listed = az.listed();
    assert_eq!(listed.len(), 4);
    let dl = p.join("download");
    std::fs::create_dir_all(&dl).unwrap();
    for l in &listed {
        assert!(
            l.entry
                .key
                .starts_with(&format!("{}/", jiff::Timestamp::now().strftime("%Y-%m-%d"))),
            "{}",
            l.entry.key
        );
        let artifact = az.download_checked(&l.entry, &dl);
        sh(
            &dl,
            &format!("zstd -q -d -f '{}' -o plain.db", artifact.display()),
        );
        assert_eq!(
            sh(&dl, "sqlite3 plain.db 'PRAGMA integrity_check;'").trim(),
            "ok"
        );
    }

    // `list` shows both sinks; verify reads the artifact back from Azure too.
    let list = p.run_ok(&["list", "--json"]);
    let rows = rows_per_sink(&list);
    assert_eq!(rows.get("azure"), Some(&4), "{list}");
    assert_eq!(rows.get("local"), Some(&4), "{list}");
    let scratch = tempfile::tempdir().unwrap();
    let checks = backup_core::verify::Checks {
        level: backup_core::CheckLevel::IntegrityCheck,
        required_tables: vec!["tasks".into()],
        queries: vec![],
        ..Default::default()
    };
    let alpha = listed.iter().find(|l| l.entry.label == "alpha").unwrap();
    let report = backup_core::verify::verify_entry(
        &az.sink(),
        &alpha.entry,
        &scratch.path().join("a.db"),
        &checks,
    )
    .unwrap();
    assert!(
        report.ok(),
        "{:?}",
        report.all_problems().collect::<Vec<_>>()
    );
    assert_eq!(
        report.db.facts.unwrap().row_counts["tasks"],
        alpha.entry.row_counts["tasks"]
    );
}

/// True once a partial artifact file exists in `dir`.
fn streaming(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".db.partial-"))
    })
}

#[test]
fn azurite_dying_mid_run_fails_that_sink_only_and_lists_nothing_half_done() {
    let mut az = Remote::azure();
    let p = Project::new();
    p.demo_db("big.db", 40_000_000);
    p.write_config(&format!(
        "[[database]]\nlabel = \"big\"\npath = \"big.db\"\n\n[compression]\nformat = \"none\"\n\n{}",
        az.section("")
    ));
    let child = std::process::Command::new(backup_testkit::testkit::binary())
        .arg("--config")
        .arg(p.config())
        .arg("backup")
        .current_dir(p.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Take Azurite away once the snapshot is streaming (the local tier's
    // partial file appears as the same stream goes to Azure). A fixed sleep
    // lost this race once backups got faster: the run had finished.
    let started = std::time::Instant::now();
    while !streaming(&p.backups()) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the backup never started streaming"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    az.stop();
    let out = child.wait_with_output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("sink azure"),
        "the failure must name the sink:\n{text}"
    );
    az.restart();

    // Local got it; Azure shows no backup of that run.
    az.assert_nothing_half_done();
    assert_eq!(
        p.catalog().len(),
        1,
        "the local sink should still have the backup"
    );

    // The next run succeeds everywhere.
    let out = p.run_ok(&["backup"]);
    assert!(out.contains("1 ok, 0 failed"), "{out}");
    assert_eq!(az.listed().len(), 1);
}

/// A container SAS token in `AZURE_STORAGE_SAS_TOKEN` (the config names no
/// credential): backup, list and restore from Azure work, and the token's
/// signature shows up in no output.
#[test]
fn a_sas_token_from_the_environment_backs_up_and_restores() {
    let az = Remote::azure();
    let p = Project::new();
    p.demo_db("app.db", 800_000);
    p.write_config(&format!(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n\n{}",
        az.section("")
    ));
    let sas = Azurite::container_sas(ROOT, "racwdl", "2099-01-01T00:00:00Z");
    let sig = sas.rsplit("sig=").next().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = p
            .command(args)
            .env("AZURE_STORAGE_SAS_TOKEN", &sas)
            .output()
            .unwrap();
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}:\n{text}");
        assert!(!text.contains(&sig), "{args:?} leaked the SAS:\n{text}");
        text
    };
    let out = run(&["backup"]);
    assert!(out.contains("1 ok, 0 failed"), "{out}");
    let list = run(&["list", "--json"]);
    assert!(rows_per_sink(&list).contains_key("azure"), "{list}");
    let out = run(&["restore", "app", "--from", "azure", "--to", "restored.db"]);
    assert!(out.contains("sink azure"), "{out}");
    assert_eq!(
        backup_core::verify::check_file(
            &p.join("restored.db"),
            &backup_core::verify::Checks::default()
        )
        .problems,
        []
    );
    run(&["status"]);

    // Without the token (and no other credential) the emulator switch falls
    // back to the well-known key, so prove the token was what got in: a
    // read-only token cannot write.
    let read_only = Azurite::container_sas(ROOT, "rl", "2099-01-01T00:00:00Z");
    let out = p
        .command(&["backup"])
        .env("AZURE_STORAGE_SAS_TOKEN", &read_only)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
}

#[test]
fn a_wrong_key_is_an_authentication_error_that_never_shows_the_key() {
    let az = Remote::azure();
    let p = Project::new();
    p.demo_db("app.db", 300_000);
    let key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleQ==";
    p.write_config(&format!(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[azure]\ncontainer = \"backups\"\naccount = \"devstoreaccount1\"\naccess_key = \"{key}\"\nendpoint = \"{}\"\nmax_retries = 0\n",
        az.azurite().account_endpoint()
    ));
    // Its start ("WrongKeyW" in base64) must not show, let alone all of it.
    assert_wrong_credentials_refused(|args| p.run(args), "V3JvbmdLZXlX");
}

#[test]
fn prune_on_azure_deletes_exactly_the_planned_blobs() {
    let p = Project::new();
    p.demo_db("app.db", 300_000);
    Remote::azure().assert_prune_deletes_exactly_the_planned_objects(&p);
}
