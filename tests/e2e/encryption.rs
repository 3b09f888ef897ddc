//! Encryption at rest with age: the backup host holds only public keys; the
//! real `age` CLI reads what we write and writes what we read; no plaintext
//! content, and no plain digest of it, reaches a sink; every key problem has
//! its own clear error; no key material is ever printed.

use std::path::{Path, PathBuf};

use backup_core::digest::Sha256;
use backup_core::encryption::{Identities, Recipients};
use backup_testkit::faults::all_files;
use backup_testkit::restore_support::flip_byte;
use backup_testkit::testkit::{Project, output_text, require_tool, sh};
use rusqlite::Connection;

const MARKER: &str = "MARKER-7f3c2a-only-in-the-database";

/// A project whose database holds `MARKER`, a key pair made by the real
/// `age-keygen`, and a config that encrypts to its public key.
struct Encrypted {
    p: Project,
    db: PathBuf,
    key: PathBuf,
}

fn project(extra: &str) -> Encrypted {
    require_tool("age");
    require_tool("age-keygen");
    let p = Project::new();
    let db = p.join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO tasks (title) SELECT '{MARKER} ' || i FROM n;"
    ))
    .unwrap();
    drop(conn);
    sh(p.path(), "age-keygen -o key.txt 2>/dev/null");
    let public = sh(p.path(), "age-keygen -y key.txt").trim().to_string();
    p.write_config(&format!(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n\n\
         [encryption]\nrecipients = [\"{public}\"]\n{extra}"
    ));
    Encrypted {
        key: p.join("key.txt"),
        db,
        p,
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    all_files(dir).iter().map(|f| dir.join(f)).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn artifact(e: &Encrypted) -> PathBuf {
    let l = &e.p.catalog()[0];
    e.p.backups().join(&l.entry.key)
}

#[test]
fn the_age_cli_reads_our_backups_and_nothing_readable_is_stored() {
    let e = project("");
    e.p.run_ok(&["backup"]);
    let art = artifact(&e);
    assert!(art.to_string_lossy().ends_with(".db.zst.age"), "{art:?}");

    // The real age and zstd binaries open it; sqlite3 finds it whole.
    sh(
        e.p.path(),
        &format!("age -d -i key.txt '{}' | zstd -dq > out.db", art.display()),
    );
    let check = sh(
        e.p.path(),
        "sqlite3 out.db 'PRAGMA integrity_check; SELECT count(*) FROM tasks'",
    );
    assert_eq!(check.trim(), "ok\n2000");
    // sha256sum -c needs no key: the sidecar hashes the stored bytes.
    sh(&e.p.backups(), "sha256sum -c --quiet *.sha256");

    // Nothing on the sink shows the content or a plain digest of it.
    let image_sha = Sha256::hex_of(&std::fs::read(e.p.join("out.db")).unwrap());
    let files = files_below(&e.p.backups());
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !contains(&bytes, MARKER.as_bytes()),
            "{f:?} shows the content"
        );
        assert!(
            !contains(&bytes, image_sha.as_bytes()),
            "{f:?} has the image's plain SHA-256"
        );
    }
    // The key never leaves the operator's hands, and is never printed.
    let listed = e.p.run_ok(&["list", "--json"]);
    assert!(listed.contains("encrypted_to"), "{listed}");
    assert!(!listed.contains("AGE-SECRET-KEY"), "{listed}");
}

#[test]
fn a_file_the_age_cli_encrypted_to_our_recipient_opens_through_our_reader() {
    require_tool("age");
    let dir = tempfile::tempdir().unwrap();
    sh(dir.path(), "age-keygen -o key.txt 2>/dev/null");
    let public = sh(dir.path(), "age-keygen -y key.txt").trim().to_string();
    std::fs::write(dir.path().join("plain"), b"written by the age CLI").unwrap();
    sh(dir.path(), &format!("age -r {public} -o plain.age plain"));
    let ids = Identities::read_file(&dir.path().join("key.txt")).unwrap();
    let cipher = std::fs::File::open(dir.path().join("plain.age")).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut ids.decrypt(Box::new(cipher), &[]).unwrap(), &mut out)
        .unwrap();
    assert_eq!(out, "written by the age CLI");
    // And our recipient parser takes the CLI's public key.
    assert_eq!(
        Recipients::parse([&public]).unwrap().fingerprints().len(),
        1
    );
}

#[test]
fn verify_and_restore_need_the_right_identity_and_say_so() {
    let e = project("");
    e.p.run_ok(&["backup"]);
    let key = e.key.to_str().unwrap();

    // No identity: stored bytes are checked, the content is not, and it says so.
    let text = e.p.run_ok(&["verify", "--latest", "app"]);
    assert!(text.contains("stored bytes only"), "{text}");
    // With it: every check, row counts from inside; a key only its owner
    // can read draws no warning.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&e.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text =
        e.p.run_ok(&["verify", "--latest", "app", "--identity", key]);
    assert!(!text.contains("chmod 600"), "{text}");
    // Readable by others: it still works (a restore must not be blocked in
    // an emergency), but says loudly how to fix it.
    std::fs::set_permissions(&e.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text =
        e.p.run_ok(&["verify", "--latest", "app", "--identity", key]);
    assert!(
        text.contains("mode 0644") && text.contains("chmod 600"),
        "{text}"
    );
    assert!(
        text.contains("OK: every check passed") && text.contains("tasks: 2000 rows"),
        "{text}"
    );

    // Restore without an identity: exit 1, naming what is missing; nothing touched.
    let before = std::fs::read(&e.db).unwrap();
    let out = e.p.run(&["restore", "app"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("--identity"),
        "{}",
        output_text(&out)
    );
    assert_eq!(std::fs::read(&e.db).unwrap(), before);

    // The wrong identity: exit 2, not "corrupt", the target untouched.
    sh(e.p.path(), "age-keygen -o other.txt 2>/dev/null");
    let out = e.p.run(&["restore", "app", "--identity", "other.txt"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cannot decrypt") && !text.contains("CORRUPT"),
        "{text}"
    );
    let out =
        e.p.run(&["verify", "--latest", "app", "--identity", "other.txt"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert_eq!(std::fs::read(&e.db).unwrap(), before);

    // The right one, from the environment: restored, and no key in any output.
    let out =
        e.p.command(&["restore", "app", "--to", "restored.db"])
            .env("SQLITE_BACKUP_IDENTITY_FILE", key)
            .output()
            .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let secret = std::fs::read_to_string(&e.key).unwrap();
    let secret_line = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY"))
        .unwrap();
    assert!(
        !text.contains(secret_line) && !text.contains("AGE-SECRET-KEY"),
        "{text}"
    );
    let n: i64 = Connection::open(e.p.join("restored.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2000);
}

#[test]
fn damaged_ciphertext_is_named_and_restore_walks_back_past_it() {
    let e = project("");
    e.p.run_ok(&["backup", "--tag", "first"]);
    Connection::open(&e.db)
        .unwrap()
        .execute("INSERT INTO tasks (title) VALUES ('second')", [])
        .unwrap();
    e.p.run_ok(&["backup", "--tag", "second"]);
    let key = e.key.to_str().unwrap();
    let newest = artifact(&e);
    let sidecar = PathBuf::from(format!("{}.sha256", newest.display()));

    // A flipped byte inside the payload, sidecar resealed so only the
    // decryption can tell: age's authentication catches it.
    flip_byte(&newest, 400);
    let resealed = format!(
        "{}  {}\n",
        Sha256::hex_of(&std::fs::read(&newest).unwrap()),
        newest.file_name().unwrap().to_string_lossy()
    );
    std::fs::write(&sidecar, resealed).unwrap();
    let direct =
        e.p.run(&["verify", newest.to_str().unwrap(), "--identity", key]);
    let text = output_text(&direct);
    assert_eq!(direct.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot decrypt") && text.contains("CORRUPT"),
        "{text}"
    );

    let out =
        e.p.run(&["restore", "app", "--to", "walked.db", "--identity", key]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("cannot decrypt"), "{text}");
    let n: i64 = Connection::open(e.p.join("walked.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2000, "walked back to the first backup");

    // Truncated: named too.
    let len = std::fs::metadata(&newest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    f.set_len(len / 2).unwrap();
    let out =
        e.p.run(&["verify", newest.to_str().unwrap(), "--identity", key]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(output_text(&out).contains("FAIL"), "{}", output_text(&out));
}

#[test]
fn an_unusable_recipient_stops_the_run_before_anything_is_written() {
    let p = Project::new();
    p.demo_db("app.db", 100_000);
    for bad in [
        "recipients = [\"age1notakey\"]",
        "recipients_file = \"missing-keys.txt\"",
        "recipients = []",
        "passphrase_env = \"SQLITE_BACKUP_TEST_UNSET_PASSPHRASE\"",
    ] {
        p.write_config(&format!(
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[encryption]\n{bad}\n"
        ));
        let out = p.run(&["backup"]);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {text}");
        assert!(text.contains("encryption"), "{bad}: {text}");
        assert!(!p.backups().exists(), "{bad}: something was written");
    }
}

#[test]
fn passphrase_mode_round_trips_and_never_prints_the_passphrase() {
    let e = project("");
    // Replace the keys by a passphrase taken from the environment.
    e.p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n\
         [encryption]\npassphrase_env = \"APP_BACKUP_PASSPHRASE\"\n",
    );
    let pass = "correct horse battery staple 9d2";
    let run = |args: &[&str]| {
        let out =
            e.p.command(args)
                .env("APP_BACKUP_PASSPHRASE", pass)
                .output()
                .unwrap();
        let text = output_text(&out);
        assert!(!text.contains(pass), "{text}");
        (out.status.code(), text)
    };
    let (code, text) = run(&["backup"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&["verify", "--latest", "app"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("OK: every check passed"), "{text}");
    for f in files_below(&e.p.backups()) {
        assert!(!contains(&std::fs::read(&f).unwrap(), MARKER.as_bytes()));
    }

    // A wrong passphrase is a key problem, as a wrong identity is: exit 2,
    // never "corrupt", and a restore neither walks back nor touches anything.
    let wrong = |args: &[&str]| {
        let out =
            e.p.command(args)
                .env("APP_BACKUP_PASSPHRASE", "correct horse battery stapler")
                .output()
                .unwrap();
        (out.status.code(), output_text(&out))
    };
    let before = std::fs::read(&e.db).unwrap();
    for args in [&["verify", "--latest", "app"][..], &["restore", "app"]] {
        let (code, text) = wrong(args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(
            text.contains("passphrase given")
                && !text.contains("CORRUPT")
                && !text.contains("REJECTED"),
            "{args:?}: {text}"
        );
    }
    assert_eq!(std::fs::read(&e.db).unwrap(), before);
}

#[test]
fn nothing_readable_reaches_azure_either() {
    let e = project("");
    let az = backup_testkit::azurite::Azurite::start().expect("start Azurite (npm ci)");
    az.create_container("sealed").unwrap();
    let config = std::fs::read_to_string(e.p.config()).unwrap();
    e.p.write_config(&format!(
        "{config}\n[azure]\ncontainer = \"sealed\"\nuse_emulator = true\nendpoint = \"{}\"\nmax_retries = 1\n",
        az.account_endpoint()
    ));
    let out = e.p.run_ok(&["backup"]);
    assert!(out.contains("1 ok, 0 failed"), "{out}");

    let sink = backup_azure::AzureSink::from_config(&az.sink_config("sealed")).unwrap();
    let keys = backup_core::sink::Sink::list(&sink, "").unwrap();
    assert!(keys.iter().any(|k| k.ends_with(".db.zst.age")), "{keys:?}");
    let image = {
        let local = artifact(&e);
        sh(
            e.p.path(),
            &format!(
                "age -d -i key.txt '{}' | zstd -dq > plain.db",
                local.display()
            ),
        );
        Sha256::hex_of(&std::fs::read(e.p.join("plain.db")).unwrap())
    };
    for key in &keys {
        let bytes = backup_core::sink::get_bytes(&sink, key).unwrap();
        assert!(
            !contains(&bytes, MARKER.as_bytes()),
            "{key} shows the content"
        );
        assert!(
            !contains(&bytes, image.as_bytes()),
            "{key} has the image's plain SHA-256"
        );
    }
    // And the copy in Azure restores with the identity alone.
    let key = e.key.to_str().unwrap();
    let restored = e.p.run_ok(&[
        "restore",
        "app",
        "--from",
        "azure",
        "--to",
        "from-azure.db",
        "--identity",
        key,
    ]);
    assert!(restored.contains("Restored"), "{restored}");
}
