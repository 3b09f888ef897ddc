//! A catalog copied whole by a tool nobody here wrote (`rclone sync` of the
//! local tier into a bucket of the kit's moto, as operators copy a backup
//! container to another region or provider) verifies and restores on a host
//! that knows only the copy; one manifest spliced into the copy from another
//! sink's catalog is still named.

use std::process::Command;

use backup_core::digest::Sha256;
use backup_core::manifest::{self, Listed};
use backup_testkit::remote::{ROOT, Remote};
use backup_testkit::testkit::{Project, output_text, require_tool, sh, table_checksums};

const DATABASE: &str =
    "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"tasks\"]\n";

/// Prefix of the `[s3]` section's objects (its default).
const PREFIX: &str = "sqlite";

/// rclone with the remote `mirror:` on the kit's moto, configured only
/// through its environment (no config file of the machine's user), as the
/// backup user of the README's least-privilege policy.
fn rclone(s3: &Remote, p: &Project, args: &[&str]) -> String {
    let moto = s3.moto();
    let out = Command::new("rclone")
        .args(args)
        .args(["--s3-no-check-bucket", "--retries", "1"])
        .current_dir(p.path())
        .env("HOME", p.path())
        // Plain HTTP to moto; the AWS SDK inside rclone fails on a CA
        // bundle the machine may name for real endpoints.
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_PROFILE")
        .env("RCLONE_CONFIG", p.join("rclone.conf"))
        .env("RCLONE_CONFIG_MIRROR_TYPE", "s3")
        .env("RCLONE_CONFIG_MIRROR_PROVIDER", "Other")
        .env("RCLONE_CONFIG_MIRROR_ENDPOINT", moto.url())
        .env("RCLONE_CONFIG_MIRROR_REGION", "us-east-1")
        .env("RCLONE_CONFIG_MIRROR_ACCESS_KEY_ID", moto.access_key_id())
        .env(
            "RCLONE_CONFIG_MIRROR_SECRET_ACCESS_KEY",
            moto.secret_access_key(),
        )
        .output()
        .expect("run rclone");
    let text = output_text(&out);
    assert!(out.status.success(), "rclone {args:?} failed:\n{text}");
    text
}

/// `mirror:` path of a key under the `[s3]` prefix.
fn in_bucket(key: &str) -> String {
    format!("mirror:{ROOT}/{PREFIX}/{key}")
}

fn mutate(p: &Project, i: usize) {
    sh(
        p.path(),
        &format!("sqlite3 app.db \"UPDATE tasks SET status = 'run{i}' WHERE id % 7 = {i};\""),
    );
}

/// Kinds of the problems `verify --catalog --json` reports for `sink`, with
/// the manifest each names.
fn problems(json: &str, sink: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("verify --json");
    let report = v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["report"]["sink"] == sink)
        .unwrap_or_else(|| panic!("no sink {sink}: {json}"))["report"]
        .clone();
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let named = p.get("key").or_else(|| p.get("manifest"));
            (
                p["kind"].as_str().unwrap().to_string(),
                named.and_then(|k| k.as_str()).unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn restore_check(s3: &Remote, dr: &Project, l: &Listed, by_id: bool, rows: &str) {
    let to = format!("restored-{}.db", l.run_id);
    // Host A's database: a restore on another host names it.
    let mut args = vec![
        "restore", "app", "--from", "s3", "--source", "web-1", "--to", &to,
    ];
    if by_id {
        args.extend(["--id", &l.run_id]);
    }
    let out = s3.run_ok(dr, &args);
    assert!(out.contains("(sink s3,"), "{out}");
    assert!(out.contains("Source: web-1:"), "{out}");
    let restored = dr.join(&to);
    assert_eq!(
        Sha256::hex_of(&std::fs::read(&restored).unwrap()),
        l.entry.db_sha256,
        "snapshot {} restored to another image",
        l.run_id
    );
    assert_eq!(format!("{:?}", table_checksums(&restored)), rows);
}

#[test]
fn a_catalog_mirrored_with_rclone_verifies_and_restores_and_a_spliced_manifest_is_named() {
    require_tool("rclone");
    require_tool("sqlite3");
    let s3 = Remote::s3();

    // Host A: the local tier (and a cold tier, another sink with a catalog
    // of its own): two classic full runs, then an incremental chain.
    let a = Project::new();
    let db = a.demo_db("app.db", 800_000);
    let local = format!("[local]\ncold = {:?}\n", a.join("cold"));
    a.write_config(&format!("host = \"web-1\"\n{DATABASE}\n{local}"));
    let mut rows = Vec::new();
    for i in 0..2 {
        mutate(&a, i);
        let tier: &[&str] = if i == 0 { &["--tier", "cold"] } else { &[] };
        a.run_ok(&[&["backup"], tier].concat());
        rows.push(format!("{:?}", table_checksums(&db)));
    }
    a.write_config(&format!(
        "host = \"web-1\"\n{DATABASE}\n[snapshot]\nincremental = true\n\n{local}"
    ));
    for i in 2..5 {
        mutate(&a, i);
        a.run_ok(&["backup"]);
        rows.push(format!("{:?}", table_checksums(&db)));
    }
    let mut taken = a.catalog();
    taken.reverse();
    let depths: Vec<Option<u32>> = taken
        .iter()
        .map(|l| l.entry.pages.as_ref().map(|m| m.chain_depth))
        .collect();
    assert_eq!(depths, [None, None, Some(0), Some(1), Some(2)]);

    // The copy: every object of the local tier, byte for byte.
    let root = format!("{}", a.backups().display());
    rclone(&s3, &a, &["sync", &root, &in_bucket("")]);

    // Host B knows only the copy (its own local tier is empty).
    let dr = Project::new();
    dr.write_config(&format!("host = \"dr-1\"\n{DATABASE}\n{}", s3.section("")));
    let out = s3.run_ok(&dr, &["verify", "--catalog", "--deep"]);
    assert!(out.contains("Catalog ok."), "{out}");
    assert!(out.contains("copy of sink local"), "{out}");
    let json = s3.run_ok(&dr, &["verify", "--catalog", "--json"]);
    assert!(problems(&json, "s3").is_empty(), "{json}");

    // Newest (incremental, depth 2), a middle link and a classic full.
    restore_check(&s3, &dr, &taken[4], false, &rows[4]);
    restore_check(&s3, &dr, &taken[3], true, &rows[3]);
    restore_check(&s3, &dr, &taken[1], true, &rows[1]);

    // Host A goes on with a run to the cold tier too; its cold manifest
    // (and sidecar) is spliced into the copy, as a newer run.
    mutate(&a, 5);
    a.run_ok(&["backup", "--tier", "cold"]);
    let cold_manifests: Vec<String> = std::fs::read_dir(a.join("cold/manifests"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    let newest = cold_manifests.iter().max().unwrap();
    let key = format!("{}/{newest}", manifest::MANIFEST_DIR);
    for k in [key.clone(), manifest::sidecar_key(&key)] {
        let from = a.join("cold").join(&k);
        let from = from.to_str().unwrap();
        rclone(&s3, &a, &["copyto", from, &in_bucket(&k)]);
    }

    let out = s3.run(&dr, &["verify", "--catalog"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{key} records sink \"cold\" (field `sink`): copied from another sink"
        )),
        "{text}"
    );
    let json = s3.run(&dr, &["verify", "--catalog", "--json"]);
    let json = String::from_utf8_lossy(&json.stdout);
    let wrong: Vec<String> = problems(&json, "s3")
        .into_iter()
        .filter(|(kind, _)| kind == "wrong_sink")
        .map(|(_, k)| k)
        .collect();
    assert_eq!(wrong, [key], "{json}");
}
