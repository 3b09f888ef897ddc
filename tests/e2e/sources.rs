//! Two hosts share one backup root and one Azure container, and both call
//! their database `app`: each restores its own, their incremental chains
//! never share a pack, and one host's prune never touches the other's runs.

use std::collections::BTreeSet;
use std::path::Path;

use backup_core::digest::Sha256;
use backup_core::manifest::{self, Listed, Role};
use backup_core::sink::{Placement, Sink};
use backup_local::LocalSink;
use backup_testkit::remote::Remote;
use backup_testkit::testkit::{Project, output_text, require_tool, sh};

/// One host: its own folder, config (`host = NAME`) and database `app.db`.
fn host(name: &str, root: &Path, remote: &Remote, extra: &str) -> Project {
    let p = Project::new();
    p.write_config(&format!(
        "host = \"{name}\"\n\n[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\
         required_tables = [\"tasks\"]\n\n[snapshot]\nincremental = true\n\n\
         [local]\nroot = \"{}\"\n\n{extra}\n{}",
        root.display(),
        remote.section("")
    ));
    p
}

fn sql(p: &Project, script: &str) {
    sh(p.path(), &format!("sqlite3 app.db \"{script}\""));
}

/// The database's content, as `sqlite3 .dump` prints it.
fn content(path: &Path) -> String {
    let dump = sh(
        path.parent().unwrap(),
        &format!("sqlite3 '{}' .dump", path.display()),
    );
    Sha256::hex_of(dump.as_bytes())
}

/// Every listed entry of `sink` taken by `host`, oldest first.
fn entries_of(sink: &dyn Sink, host: &str) -> Vec<Listed> {
    let (stored, bad) = manifest::read_all(sink).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let mut all: Vec<Listed> = manifest::listed(sink, &stored)
        .into_iter()
        .filter(|l| l.entry.host.as_deref() == Some(host))
        .collect();
    all.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    all
}

fn packs(entries: &[Listed]) -> BTreeSet<String> {
    entries
        .iter()
        .flat_map(|l| l.entry.objects())
        .filter(|n| n.role == Role::Pack)
        .map(|n| n.key)
        .collect()
}

#[test]
fn hosts_sharing_a_root_and_a_label_each_restore_their_own_database() {
    require_tool("sqlite3");
    let remote = Remote::azure();
    let shared = tempfile::tempdir().unwrap();
    let root = shared.path().join("backups");
    let a = host("web-1", &root, &remote, "");
    let b = host(
        "web-2",
        &root,
        &remote,
        "[retention]\nhot_days = 0\nwarm_days = 0\nkeep_last = 1\n",
    );
    a.demo_db("app.db", 600_000);
    b.demo_db("app.db", 600_000);
    sql(&b, "UPDATE tasks SET status = 'host-b' WHERE id % 3 = 0;");

    // Interleaved, so that each host's newest run is the other's base
    // candidate by label alone.
    for step in 0..2 {
        sql(
            &a,
            &format!("UPDATE tasks SET priority = {step} WHERE id % 7 = 1;"),
        );
        remote.run_ok(&a, &["backup"]);
        sql(
            &b,
            &format!("UPDATE tasks SET priority = {step} WHERE id % 5 = 2;"),
        );
        remote.run_ok(&b, &["backup"]);
    }

    let local = LocalSink::new("local", root.clone(), Placement::Local);
    let azure = remote.sink();
    for sink in [&local as &dyn Sink, &azure] {
        let (ea, eb) = (entries_of(sink, "web-1"), entries_of(sink, "web-2"));
        let depths = |e: &[Listed]| -> Vec<u32> {
            e.iter()
                .map(|l| l.entry.pages.as_ref().unwrap().chain_depth)
                .collect()
        };
        assert_eq!(depths(&ea), [0, 1], "{}: web-1's chain", sink.name());
        assert_eq!(depths(&eb), [0, 1], "{}: web-2's chain", sink.name());
        let shared: Vec<String> = packs(&ea).intersection(&packs(&eb)).cloned().collect();
        assert!(
            shared.is_empty(),
            "{}: chains share {shared:?}",
            sink.name()
        );
        assert!(ea[0].entry.source.ends_with("/app.db") && ea[0].entry.source.starts_with('/'));
    }

    for (p, name) in [(&a, "a"), (&b, "b")] {
        for from in ["local", "azure"] {
            let to = p.join(&format!("restored-{from}.db"));
            let out = remote.run_ok(
                p,
                &[
                    "restore",
                    "app",
                    "--from",
                    from,
                    "--to",
                    to.to_str().unwrap(),
                ],
            );
            assert!(!out.contains("ANOTHER"), "{out}");
            assert_eq!(
                content(&to),
                content(&p.join("app.db")),
                "host {name} from {from}:\n{out}"
            );
        }
        let out = remote.run_ok(p, &["verify", "--latest", "app"]);
        assert!(out.contains("OK"), "{out}");
        remote.run_ok(p, &["drill"]);
        let status = remote.run_ok(p, &["status", "--json"]);
        let newest = entries_of(&local, if name == "a" { "web-1" } else { "web-2" })
            .pop()
            .unwrap();
        assert!(status.contains(&newest.run_id), "{status}");
    }

    // `list` shows this host's own backups and says the others are hidden.
    let out = remote.command(&a, &["list", "--json"]).output().unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 4, "2 runs × 2 sinks of web-1");
    assert!(rows.iter().all(|r| r["host"] == "web-1"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 backup(s) of other machines"));
    let all = remote.run_ok(&a, &["list", "--all-sources"]);
    assert!(all.contains("SOURCE") && all.contains("web-2:"), "{all}");

    // A new machine with no backups of its own is told whose there are,
    // and restores another host's only when it names it.
    let c = host("web-3", &root, &remote, "");
    let out = remote.run(&c, &["restore", "app", "--to", "x.db"]);
    let text = output_text(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("web-1:") && text.contains("web-2:") && text.contains("--source"),
        "{text}"
    );
    assert!(!c.join("x.db").exists());
    let out = remote.run_ok(&c, &["restore", "app", "--source", "web-2", "--to", "x.db"]);
    assert!(
        out.contains("ANOTHER machine's") && out.contains("web-2:"),
        "{out}"
    );
    assert_eq!(content(&c.join("x.db")), content(&b.join("app.db")));

    // web-2 keeps one run; its prune leaves every run of web-1 listed.
    remote.run_ok(&b, &["prune"]);
    for sink in [&local as &dyn Sink, &azure] {
        assert_eq!(entries_of(sink, "web-2").len(), 1, "{}", sink.name());
        assert_eq!(entries_of(sink, "web-1").len(), 2, "{}", sink.name());
    }
    let to = a.join("after-prune.db");
    remote.run_ok(&a, &["restore", "app", "--to", to.to_str().unwrap()]);
    assert_eq!(content(&to), content(&a.join("app.db")));
}
