//! Several writers appending to one catalog at once: the chain never forks
//! and every manifest is on it. Real processes (this test binary re-run as
//! children, each with its own sink) on one local folder and on one Azurite
//! container, and a prune with the real `sqlite-backup` binary backing up
//! into the same root meanwhile.
//!
//! The Azurite case needs `npm ci` at the repo root; the binary cases need
//! `cargo build -p backup-cli`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::sync::{Mutex, mpsc};

use backup_core::Retention;
use backup_core::catalog::{self, ArtifactCheck, Options};
use backup_core::prune;
use backup_core::sink::faults::{Hooked, Op};
use backup_core::sink::{Placement, Sink};
use backup_local::LocalSink;
use backup_testkit::azurite::Azurite;

/// Appends per child process.
const APPENDS: usize = 40;

/// Environment of a child: which sink (`local:<dir>` or
/// `azure:<endpoint>:<container>`) and its name in the output.
const CHILD_SINK: &str = "CATALOG_APPENDER_SINK";

fn child_sink(spec: &str) -> Box<dyn Sink> {
    if let Some(dir) = spec.strip_prefix("local:") {
        return Box::new(LocalSink::new("local", dir, Placement::Local));
    }
    let rest = spec.strip_prefix("azure:").expect("local: or azure:");
    let (endpoint, container) = rest.rsplit_once(' ').expect("endpoint and container");
    let cfg: backup_azure::AzureConfig = toml::from_str(&format!(
        "container = {container:?}\nuse_emulator = true\nendpoint = {endpoint:?}\nmax_retries = 2\n"
    ))
    .expect("[azure] section");
    Box::new(backup_azure::AzureSink::from_config(&cfg).expect("azure sink"))
}

/// The child: says `ready`, waits for `go` on stdin (so both children start
/// appending together), appends [`APPENDS`] manifests and prints each key.
#[test]
#[ignore = "a child process of the concurrency tests below, not a test on its own"]
fn appender_child() {
    let spec = std::env::var(CHILD_SINK).expect("run by the tests below");
    let sink = child_sink(&spec);
    // One listing first, so connection setup is not what staggers the start.
    sink.list("manifests").unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    assert_eq!(go.trim(), "go");
    for i in 0..APPENDS {
        let now = jiff::Timestamp::now();
        let (key, _) = backup_core::catalog::append::write_manifest(
            sink.as_ref(),
            &backup_core::manifest::new_run_id(now),
            now,
            now,
            vec![],
            vec![],
        )
        .unwrap_or_else(|e| panic!("append {i}: {e}"));
        println!("appended {key}");
    }
}

fn spawn_appender(spec: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "appender_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SINK, spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Run two appender processes against `spec` at once; return every key
/// they say they appended.
fn two_appenders(spec: &str) -> Vec<String> {
    let mut children: Vec<Child> = (0..2).map(|_| spawn_appender(spec)).collect();
    let mut outputs: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()))
        .collect();
    // Both ready before either starts. (The harness prints `test
    // appender_child ... ` before the child's own line, on the same line.)
    for out in &mut outputs {
        let mut line = String::new();
        while !line.trim_end().ends_with("ready") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
        }
    }
    for c in &mut children {
        writeln!(c.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut keys = Vec::new();
    for (c, out) in children.iter_mut().zip(outputs) {
        keys.extend(
            out.lines()
                .map(Result::unwrap)
                .filter_map(|l| l.strip_prefix("appended ").map(str::to_string)),
        );
        assert!(c.wait().unwrap().success(), "an appender failed");
    }
    keys
}

fn assert_one_chain(sink: &dyn Sink, appended: &[String]) {
    assert_eq!(appended.len(), 2 * APPENDS, "every append reported");
    let report = catalog::verify(
        sink,
        &Options {
            artifacts: ArtifactCheck::Skip,
        },
        None,
    )
    .unwrap();
    assert!(report.ok(), "the chain forked: {:#?}", report.problems);
    assert_eq!(report.manifests, 2 * APPENDS, "manifests stored");
    assert_eq!(report.chain, 2 * APPENDS, "every manifest on the chain");
    for key in appended {
        assert!(sink.size(key).unwrap().is_some(), "{key} is stored");
    }
}

#[test]
fn two_processes_appending_to_one_folder_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let keys = two_appenders(&format!("local:{}", dir.path().display()));
    assert_one_chain(
        &LocalSink::new("local", dir.path(), Placement::Local),
        &keys,
    );
}

#[test]
fn two_processes_appending_to_one_azure_container_keep_one_chain() {
    let azurite = Azurite::start().unwrap_or_else(|e| panic!("{e}"));
    azurite
        .create_container("shared")
        .unwrap_or_else(|e| panic!("{e}"));
    let keys = two_appenders(&format!("azure:{} shared", azurite.account_endpoint()));
    let sink = backup_azure::AzureSink::from_config(&azurite.sink_config("shared")).unwrap();
    assert_one_chain(&sink, &keys);
}

/// A WAL database with some rows.
fn database(path: &Path, rows: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE tasks(id INTEGER PRIMARY KEY, title TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {rows})
         INSERT INTO tasks(title) SELECT printf('task %d with some text', i) FROM n;"
    ))
    .unwrap();
}

fn sqlite_backup(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(backup_testkit::testkit::binary())
        .current_dir(dir)
        .env_remove("SQLITE_BACKUP_CONFIG")
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap()
}

/// A local sink that stops at its first manifest write (after the writer
/// has read the tip), tells the test, and goes on when the test says so.
fn gated(
    inner: LocalSink,
    reached: mpsc::Sender<()>,
    open: mpsc::Receiver<()>,
) -> Hooked<LocalSink> {
    let reached = Mutex::new(Some(reached));
    let open = Mutex::new(open);
    Hooked::new(inner).with_hook(move |op, key, _| {
        if op != Op::Put || !key.starts_with("manifests/") || key.ends_with(".pending") {
            return Ok(());
        }
        if let Some(tx) = reached.lock().unwrap().take() {
            tx.send(()).unwrap();
            open.lock().unwrap().recv().unwrap();
        }
        Ok(())
    })
}

/// `prune` of one database while `sqlite-backup backup` of another writes
/// into the same root (two configs sharing it): the prune has read the tip
/// and is about to append when the whole backup runs. Before appends were
/// serialised both manifests named that tip: a fork, every time.
#[test]
fn a_backup_during_a_prune_keeps_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    database(&root.join("old.db"), 200);
    database(&root.join("new.db"), 300);
    for (label, config) in [("old", "old.toml"), ("new", "new.toml")] {
        std::fs::write(
            root.join(config),
            format!(
                "state_dir = \"state-{label}\"\n\n[[database]]\nlabel = \"{label}\"\npath = \"{label}.db\"\n\n[local]\nroot = \"backups\"\ntemplate = \"{{label}}-{{tag}}-{{run}}{{ext}}\"\n"
            ),
        )
        .unwrap();
    }
    for _ in 0..3 {
        let out = sqlite_backup(root, &["--config", "old.toml", "backup"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (reached_tx, reached) = mpsc::channel();
    let (open, open_rx) = mpsc::channel();
    let gated = gated(
        LocalSink::new("local", root.join("backups"), Placement::Local),
        reached_tx,
        open_rx,
    );
    // Two months on, the two older backups of `old` are past the warm tier.
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 60);
    let report = std::thread::scope(|s| {
        let pruning = s.spawn(|| {
            let sinks: [&dyn Sink; 1] = [&gated];
            let plan = prune::plan(&sinks, &["old".into()], later, &Retention::default());
            assert_eq!(plan.delete_count(), 2, "{plan:?}");
            prune::apply(&plan, &sinks)
        });
        reached.recv().expect("the prune reaches its manifest");
        let out = sqlite_backup(root, &["--config", "new.toml", "backup"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        open.send(()).unwrap();
        pruning.join().unwrap()
    });
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.deleted_count(), 2);

    let sink = LocalSink::new("local", root.join("backups"), Placement::Local);
    let r = catalog::verify(&sink, &Options::default(), None).unwrap();
    assert!(r.ok(), "the chain forked: {:#?}", r.problems);
    assert_eq!((r.manifests, r.chain), (5, 5), "3 old, 1 new, 1 prune");
    // The CLI agrees, and anchoring works.
    let out = sqlite_backup(root, &["--config", "new.toml", "verify", "--catalog"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = sqlite_backup(
        root,
        &[
            "--config",
            "new.toml",
            "catalog",
            "anchor",
            "--append",
            "anchors.txt",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
