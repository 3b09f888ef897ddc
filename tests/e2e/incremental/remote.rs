//! Incremental chains in object storage (Azurite, moto), and the cold tier,
//! which keeps self-contained full images.

use backup_core::digest::Sha256;
use backup_core::manifest::{self, Listed};
use backup_core::sink::{Placement, Sink};
use backup_local::LocalSink;
use backup_testkit::remote::Remote;
use backup_testkit::testkit::{Project, output_text, require_tool};

use super::{CONFIG, dump, sql};

/// The sink's catalog, oldest first.
fn chain(sink: &dyn Sink) -> Vec<Listed> {
    let (stored, bad) = manifest::read_all(sink).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let mut all = manifest::listed(sink, &stored);
    all.reverse();
    all
}

/// Three snapshots (base and two links) in the remote; the newest and the
/// middle one restore exactly from it by id; with the newest one's own pack
/// deleted in the remote, `verify --catalog --deep` names that pack and
/// restore walks back to the middle one.
fn remote_chain_restores_and_walks_back(remote: Remote) {
    require_tool("sqlite3");
    let from = remote.name();
    let p = Project::new();
    let db = p.demo_db("app.db", 1_500_000);
    p.write_config(&format!("{CONFIG}\n{}", remote.section("")));
    let steps = [
        "",
        "UPDATE tasks SET status = 'a' WHERE id % 40 = 1;",
        "DELETE FROM thought_records WHERE id % 30 = 2; UPDATE tasks SET priority = 9 WHERE id % 50 = 3;",
    ];
    let mut dumps = Vec::new();
    for step in steps {
        if !step.is_empty() {
            sql(&p, step);
        }
        remote.run_ok(&p, &["backup"]);
        dumps.push(dump(&p, &db));
    }
    let sink = remote.sink();
    let taken = chain(&sink);
    let depths: Vec<u32> = taken
        .iter()
        .map(|l| l.entry.pages.as_ref().expect("incremental").chain_depth)
        .collect();
    assert_eq!(depths, [0, 1, 2], "{from}");
    let stored: std::collections::BTreeSet<String> = sink.list("").unwrap().into_iter().collect();
    for l in &taken {
        for n in l.entry.objects() {
            let key = n.key;
            assert!(
                stored.contains(&key),
                "{from}: {key} not stored: {stored:?}"
            );
        }
    }

    for i in [2, 1] {
        let l = &taken[i];
        let to = format!("by-id-{i}.db");
        let out = remote.run_ok(
            &p,
            &[
                "restore", "app", "--from", from, "--id", &l.run_id, "--to", &to,
            ],
        );
        assert!(out.contains(&format!("(sink {from},")), "{out}");
        assert_eq!(
            Sha256::hex_of(&std::fs::read(p.join(&to)).unwrap()),
            l.entry.db_sha256
        );
        assert_eq!(dump(&p, &p.join(&to)), dumps[i], "{from}: snapshot {i}");
    }

    let (newest, middle) = (&taken[2], &taken[1]);
    let own = newest.entry.pages.as_ref().unwrap().packs.last().unwrap();
    let needed_by_middle = middle.entry.pages.as_ref().unwrap().packs.contains(own);
    assert!(!needed_by_middle, "{}", own.key);
    sink.delete(&own.key).unwrap();
    let out = remote.run(&p, &["verify", "--catalog", "--deep"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&own.key), "{from}: names the pack: {text}");

    let out = remote.run_ok(&p, &["restore", "app", "--from", from, "--to", "walked.db"]);
    assert!(
        out.contains(&format!("walking back to {}", middle.run_id)),
        "{out}"
    );
    assert_eq!(
        Sha256::hex_of(&std::fs::read(p.join("walked.db")).unwrap()),
        middle.entry.db_sha256
    );
    assert_eq!(dump(&p, &p.join("walked.db")), dumps[1]);
}

#[test]
fn azure_incremental_chain_restores_by_id_and_walks_back_past_a_missing_pack() {
    remote_chain_restores_and_walks_back(Remote::azure());
}

#[test]
fn s3_incremental_chain_restores_by_id_and_walks_back_past_a_missing_pack() {
    remote_chain_restores_and_walks_back(Remote::s3());
}

/// A run that includes the cold tier stores a classic full artifact there
/// (one object, restorable with nothing else), never packs; the local tier
/// gets a link of its chain from the same snapshot, and the next run goes on
/// with that chain.
#[test]
fn a_phase_seal_in_incremental_mode_goes_to_cold_as_one_full_image() {
    require_tool("sqlite3");
    let p = Project::new();
    let db = p.demo_db("app.db", 1_000_000);
    p.write_config(&CONFIG.replace(
        "\n\n[snapshot]",
        "\ncold_tags = [\"phase1\"]\n\n[local]\ncold = \"cold\"\n\n[snapshot]",
    ));
    p.run_ok(&["backup"]);
    sql(&p, "UPDATE tasks SET status = 'sealed' WHERE id % 20 = 4;");
    p.run_ok(&["backup", "--tag", "phase1"]);
    let sealed_dump = dump(&p, &db);
    sql(&p, "UPDATE tasks SET priority = 7 WHERE id % 30 = 5;");
    p.run_ok(&["backup"]);

    let local = chain(&LocalSink::new("local", p.backups(), Placement::Local));
    let depths: Vec<u32> = local
        .iter()
        .map(|l| l.entry.pages.as_ref().expect("incremental").chain_depth)
        .collect();
    assert_eq!(depths, [0, 1, 2], "the seal broke the local chain");
    let link = &local[1].entry;
    assert_eq!(link.tag.as_deref(), Some("phase1"));

    let cold = LocalSink::new("cold", p.join("cold"), Placement::Cold);
    let seals = chain(&cold);
    assert_eq!(seals.len(), 1);
    let seal = &seals[0].entry;
    assert_eq!(seal.tag.as_deref(), Some("phase1"));
    assert!(
        seal.pages.is_none(),
        "the cold tier got an incremental entry"
    );
    let mut objects: Vec<String> = cold
        .list("")
        .unwrap()
        .into_iter()
        .filter(|k| !k.starts_with("manifests/"))
        .collect();
    objects.sort();
    let mut want = vec![seal.key.clone(), seal.sidecar_key.clone()];
    want.sort();
    assert_eq!(objects, want, "the seal is one artifact and its sidecar");
    assert_eq!(seal.db_sha256, link.db_sha256, "not the same image");
    assert_eq!(seal.snapshot_at, link.snapshot_at, "not the same snapshot");

    // The chain's head, built on the sealed run's link, restores exactly.
    let out = p.run_ok(&["restore", "app", "--to", "head.db"]);
    assert!(out.contains("(sink local,"), "{out}");
    assert_eq!(
        Sha256::hex_of(&std::fs::read(p.join("head.db")).unwrap()),
        local[2].entry.db_sha256
    );
    assert_eq!(dump(&p, &p.join("head.db")), dump(&p, &db));

    // Nothing else is needed: with the local tier gone, it restores.
    std::fs::remove_dir_all(p.backups()).unwrap();
    let out = p.run_ok(&[
        "restore",
        "app",
        "--from",
        "cold",
        "--tag",
        "phase1",
        "--to",
        "sealed.db",
    ]);
    assert!(out.contains("(sink cold,"), "{out}");
    assert_eq!(
        Sha256::hex_of(&std::fs::read(p.join("sealed.db")).unwrap()),
        seal.db_sha256
    );
    assert_eq!(dump(&p, &p.join("sealed.db")), sealed_dump);
}
