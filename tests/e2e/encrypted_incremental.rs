//! Encrypted incremental snapshots (`incremental = true` with `[encryption]`):
//! every pack and page-hash index is a binary age file the real `age` CLI
//! opens; no sink (local folder, Azurite, moto) holds the content, the
//! table's name, a page's BLAKE3 or SHA-256, or an unkeyed digest of the
//! image; the page hashes a run diffs against live only in the local state
//! folder (losing it costs one full base); every snapshot restores with the
//! identity; a wrong identity is a key problem, never corruption; a damaged
//! pack is named and restore walks back past it; new recipients start a new
//! chain sealed to them.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backup_core::digest::Sha256;
use backup_core::encryption::{Identities, fingerprint};
use backup_core::manifest::{Entry, Listed};
use backup_core::page_map::PackRef;
use backup_core::sink::get_bytes;
use backup_testkit::faults::all_files;
use backup_testkit::remote::Remote;
use backup_testkit::restore_support::flip_byte;
use backup_testkit::testkit::{Project, assert_image, output_text, require_tool, sh};
use jiff::{SignedDuration, Timestamp};
use rusqlite::Connection;
use serde_json::{Value, json};

const MARKER: &str = "MARKER-5e91d0-only-in-sealed-pages";
const TABLE: &str = "secret_ledger";
const ROWS: usize = 5_000;
/// How every stored pack and page-hash index starts: a binary age file.
const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";
const HASH_LEN: usize = 16;

/// A project whose WAL database holds `MARKER` in each of `ROWS` rows of
/// `TABLE`, an identity `key.txt` made by the real `age-keygen`, and a
/// config that backs it up incrementally, sealed to that key.
struct Sealed {
    p: Project,
    db: PathBuf,
    /// `key.txt`'s public key.
    public: String,
    /// moto, when the config names it: the binary then needs its credentials.
    s3: Option<Remote>,
}

/// One run: its snapshot (the local catalog's entry) and the SHA-256 of
/// the database's `.dump` right after it.
struct Taken {
    run_id: String,
    entry: Entry,
    dump_sha256: String,
}

/// The packs `entry`'s run wrote (their hashes are in its own index).
fn own_packs(entry: &Entry) -> Vec<&PackRef> {
    let map = entry.pages.as_ref().expect("an incremental entry");
    let own: Vec<&PackRef> = map.packs.iter().filter(|p| p.index == entry.key).collect();
    assert!(!own.is_empty(), "{} wrote no pack", entry.key);
    own
}

/// A new age identity in `dir/file`; returns its public key.
fn keygen(dir: &Path, file: &str) -> String {
    sh(dir, &format!("age-keygen -o {file} 2>/dev/null"));
    sh(dir, &format!("age-keygen -y {file}")).trim().to_string()
}

fn dump_sha256(p: &Project, db: &Path) -> String {
    Sha256::hex_of(sh(p.path(), &format!("sqlite3 '{}' .dump", db.display())).as_bytes())
}

/// The database file after a checkpoint that empties the WAL: the image
/// the snapshot just taken holds.
fn checkpointed(db: &Path) -> Vec<u8> {
    let conn = Connection::open(db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    let image = std::fs::read(db).unwrap();
    drop(conn);
    image
}

/// `file` opened by the real CLIs, as an operator would: `age -d`, then `zstd -d`.
fn decrypt(dir: &Path, identity: &str, file: &Path) -> Vec<u8> {
    let f = file.display();
    sh(
        dir,
        &format!("age -d -i {identity} -o '{f}.zst' '{f}' && zstd -dqf '{f}.zst' -o '{f}.plain'"),
    );
    std::fs::read(format!("{f}.plain")).unwrap()
}

fn chain_depths(rows: &[Value]) -> Vec<u64> {
    rows.iter()
        .map(|r| r["chain_depth"].as_u64().unwrap())
        .collect()
}

fn stored_bytes(row: &Value) -> u64 {
    row["stored_bytes"].as_u64().unwrap()
}

/// `a` + half the time to `b`.
fn between(a: Timestamp, b: Timestamp) -> Timestamp {
    let gap = b.duration_since(a).as_nanos();
    assert!(gap >= 2, "snapshots {a} and {b} are less than 2 ns apart");
    a + SignedDuration::from_nanos((gap / 2) as i64)
}

impl Sealed {
    /// Backed up to the local folder only.
    fn new() -> Self {
        Self::with_sinks("", None)
    }

    /// Backed up to the local folder and the sinks of `sections`.
    fn with_sinks(sections: &str, s3: Option<Remote>) -> Self {
        for tool in ["age", "age-keygen", "sqlite3", "zstd"] {
            require_tool(tool);
        }
        let p = Project::new();
        let db = p.join("app.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, memo TEXT NOT NULL, amount INTEGER NOT NULL);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
                 INSERT INTO {TABLE} (memo, amount)
                 SELECT '{MARKER} ' || i || ' ' || hex(randomblob(100)), i FROM n;"
            ))
            .unwrap();
        let public = keygen(p.path(), "key.txt");
        let s = Self { p, db, public, s3 };
        s.configure(&format!("recipients = [\"{}\"]", s.public), sections);
        s
    }

    /// The config, with `encryption` as the body of `[encryption]`.
    fn configure(&self, encryption: &str, sections: &str) {
        self.p.write_config(&format!(
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\nrequired_tables = [\"{TABLE}\"]\nincremental = true\n\n\
             [encryption]\n{encryption}\n\n{sections}"
        ));
    }

    fn command(&self, args: &[&str]) -> Command {
        match &self.s3 {
            Some(s3) => s3.command(&self.p, args),
            None => self.p.command(args),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run sqlite-backup")
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}:\n{text}");
        text
    }

    /// 1% of the rows (50, spread over the table) changed: change `n`
    /// writes its number over the end of their memos, in place.
    fn change(&self, n: usize) {
        Connection::open(&self.db)
            .unwrap()
            .execute_batch(&format!(
                "UPDATE {TABLE} SET amount = amount + {n},
                 memo = substr(memo, 1, length(memo) - 8) || printf('%08d', {n})
                 WHERE id % 100 = {};",
                n % 100
            ))
            .unwrap();
    }

    /// `backup`, and what it took.
    fn backup(&self) -> Taken {
        self.run_ok(&["backup"]);
        let newest = self
            .p
            .catalog()
            .into_iter()
            .max_by(|a, b| a.run_id.cmp(&b.run_id))
            .unwrap();
        Taken {
            run_id: newest.run_id,
            entry: newest.entry,
            dump_sha256: dump_sha256(&self.p, &self.db),
        }
    }

    /// The `list --json` rows of `sink`, oldest first.
    fn rows(&self, sink: &str) -> Vec<Value> {
        let out = self.run(&["list", "--json"]);
        assert!(out.status.success(), "{}", output_text(&out));
        let mut rows: Vec<Value> = serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap()
            .into_iter()
            .filter(|r| r["sink"] == sink)
            .collect();
        rows.sort_by_key(|r| {
            r["snapshot_at"]
                .as_str()
                .unwrap()
                .parse::<Timestamp>()
                .unwrap()
        });
        rows
    }

    /// `restore app --to <to> --identity <identity> <more>`, which must
    /// succeed; its output and the SHA-256 of the restored file's `.dump`.
    fn restore_with(&self, identity: &str, to: &str, more: &[&str]) -> (String, String) {
        let mut args = vec!["restore", "app", "--to", to, "--identity", identity];
        args.extend(more);
        let text = self.run_ok(&args);
        (text, dump_sha256(&self.p, &self.p.join(to)))
    }

    fn restore(&self, to: &str, more: &[&str]) -> (String, String) {
        self.restore_with("key.txt", to, more)
    }

    /// Where the page hashes a run diffs against are kept.
    fn page_hashes(&self) -> PathBuf {
        self.p.join(".sqlite-backup-state/page-hashes")
    }

    /// The page hashes of `opened`'s image in the local state: the file whose
    /// SHA-256 is the page-hash digest its manifest seals (which
    /// `assert_image` found to be the digest of the pages' BLAKE3-16).
    fn cached_hashes(&self, opened: &Entry) -> Vec<[u8; HASH_LEN]> {
        let want = opened.pages.as_ref().unwrap().hashes_sha256.as_ref();
        let want = want.expect("the sealed facts hold the page-hash digest");
        let dir = self.page_hashes();
        let files = all_files(&dir);
        files
            .iter()
            .map(|f| std::fs::read(dir.join(f)).unwrap())
            .find(|b| {
                b.len() as u64 == opened.page_count * HASH_LEN as u64 && Sha256::hex_of(b) == *want
            })
            .unwrap_or_else(|| {
                panic!("no file in {dir:?} holds the page hashes of the snapshot: {files:?}")
            })
            .as_chunks::<HASH_LEN>()
            .0
            .to_vec()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// What no stored object may hold, each with what it is. One pass over an
/// object finds any of them: a table of the two bytes they start with, then
/// a lookup per needle length.
struct Secrets {
    first_two: Vec<bool>,
    by_len: BTreeMap<usize, HashMap<Vec<u8>, String>>,
}

impl Secrets {
    fn new() -> Self {
        let mut s = Self {
            first_two: vec![false; 1 << 16],
            by_len: BTreeMap::new(),
        };
        s.add(MARKER.as_bytes(), || "the marker".into());
        s.add(TABLE.as_bytes(), || "the table's name".into());
        s
    }

    fn add(&mut self, needle: &[u8], what: impl FnOnce() -> String) {
        self.first_two[usize::from(needle[0]) << 8 | usize::from(needle[1])] = true;
        self.by_len
            .entry(needle.len())
            .or_default()
            .entry(needle.to_vec())
            .or_insert_with(what);
    }

    /// A digest, raw and as lowercase hex.
    fn add_digest(&mut self, raw: &[u8], what: impl Fn() -> String) {
        self.add(raw, || format!("{} (raw)", what()));
        self.add(hex(raw).as_bytes(), || format!("{} (hex)", what()));
    }

    /// Snapshot `n`'s image (`hashes`: its pages' BLAKE3-16) and the digests
    /// its manifest keeps sealed (`opened`).
    fn add_snapshot(&mut self, n: usize, image: &[u8], hashes: &[[u8; HASH_LEN]], opened: &Entry) {
        let pages = image.chunks(opened.page_size as usize);
        assert_eq!(pages.len(), hashes.len(), "snapshot {n}");
        for (i, (page, hash)) in pages.zip(hashes).enumerate() {
            self.add_digest(hash, || format!("page {i}'s BLAKE3-16 in snapshot {n}"));
            let sha = unhex(&Sha256::hex_of(page));
            self.add_digest(&sha, || format!("page {i}'s SHA-256 in snapshot {n}"));
        }
        let sealed = [
            ("image SHA-256", Sha256::hex_of(image)),
            (
                "page-hash digest",
                opened
                    .pages
                    .as_ref()
                    .unwrap()
                    .hashes_sha256
                    .clone()
                    .unwrap(),
            ),
            ("schema SHA-256", opened.schema_sha256.clone()),
        ];
        for (what, digest) in sealed {
            assert_eq!(digest.len(), 64, "snapshot {n}: {what} {digest:?}");
            self.add_digest(&unhex(&digest), || format!("the {what} of snapshot {n}"));
        }
    }

    fn find_raw(&self, hay: &[u8]) -> Option<&str> {
        for i in 0..hay.len().saturating_sub(1) {
            if !self.first_two[usize::from(hay[i]) << 8 | usize::from(hay[i + 1])] {
                continue;
            }
            for (len, needles) in &self.by_len {
                if let Some(what) = hay.get(i..i + len).and_then(|w| needles.get(w)) {
                    return Some(what);
                }
            }
        }
        None
    }

    /// In `bytes`, or in them decompressed when they are one zstd stream.
    fn find(&self, bytes: &[u8]) -> Option<String> {
        if let Some(what) = self.find_raw(bytes) {
            return Some(what.to_string());
        }
        let zstd_magic = [0x28, 0xb5, 0x2f, 0xfd];
        let plain = bytes
            .starts_with(&zstd_magic)
            .then(|| zstd::decode_all(bytes).ok());
        let plain = plain.flatten()?;
        self.find_raw(&plain)
            .map(|w| format!("{w}, zstd-compressed"))
    }
}

/// One sink's stored objects, as someone without the key gets them: the
/// local folder's files; Azurite's and moto's objects through the test
/// kit (moto's downloads through boto3).
enum Store<'a> {
    Local(&'a Project),
    Remote(&'a Remote),
}

impl Store<'_> {
    fn name(&self) -> &'static str {
        match self {
            Store::Local(_) => "local",
            Store::Remote(r) => r.name(),
        }
    }

    /// Its catalog, oldest first.
    fn chain(&self) -> Vec<Listed> {
        let mut all = match self {
            Store::Local(p) => p.catalog(),
            Store::Remote(r) => r.listed(),
        };
        all.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        all
    }

    /// Every object: key and bytes.
    fn objects(&self) -> Vec<(String, Vec<u8>)> {
        match self {
            Store::Local(p) => all_files(&p.backups())
                .into_iter()
                .map(|k| {
                    let bytes = std::fs::read(p.backups().join(&k)).unwrap();
                    (k, bytes)
                })
                .collect(),
            Store::Remote(r) => {
                let sink = r.sink();
                r.objects()
                    .into_iter()
                    .map(|k| {
                        let bytes = get_bytes(&sink, &k).unwrap();
                        (k, bytes)
                    })
                    .collect()
            }
        }
    }

    /// Object `key` into the file `to`.
    fn download(&self, key: &str, to: &Path) {
        match self {
            Store::Local(p) => {
                std::fs::copy(p.backups().join(key), to).unwrap();
            }
            Store::Remote(r) => r.download(key, to),
        }
    }
}

/// The base pack and index of the store's chain, and the newest run's own
/// packs and index, downloaded and opened by the `age` and `zstd` CLIs: the
/// base pack is the first image, page by page; its index is the pages'
/// BLAKE3-16; a newer pack holds whole pages (or, storing XOR deltas, their
/// page numbers, then one page size per delta); an index 16 bytes a page.
fn assert_the_age_cli_opens(
    s: &Sealed,
    store: &Store,
    first_image: &[u8],
    first_hashes: &[[u8; HASH_LEN]],
) {
    let name = store.name();
    let dir = s.p.join(&format!("download-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let open = |key: &str| {
        let file = dir.join(key.replace('/', "_"));
        store.download(key, &file);
        decrypt(s.p.path(), "key.txt", &file)
    };
    let chain = store.chain();
    let (base, newest) = (&chain[0].entry, &chain[chain.len() - 1]);
    let page_size = base.page_size;
    let base_map = base.pages.as_ref().unwrap();
    assert_eq!(base_map.chain_depth, 0, "{name}");
    assert_eq!(
        base_map.packs.len(),
        1,
        "{name}: an image under 8 MiB is one pack"
    );
    assert!(!base_map.packs[0].xor, "{name}");
    let pack = open(&base_map.packs[0].key);
    assert_eq!(pack.len() as u64 % page_size, 0, "{name}");
    assert!(
        pack == first_image,
        "{name}: the base pack is not the first image"
    );
    assert_eq!(
        open(&base.key),
        first_hashes.as_flattened(),
        "{name}: the base index is not the first image's page hashes"
    );

    let newest = &newest.entry;
    let own = own_packs(newest);
    for p in &own {
        let plain = open(&p.key);
        let mut pages = plain.as_slice();
        if p.xor {
            let numbers = backup_core::xor_pack::page_numbers(&mut pages, p.pages).unwrap();
            assert!(
                numbers.iter().all(|&n| n < newest.page_count),
                "{name}: {numbers:?}"
            );
        }
        assert_eq!(pages.len() as u64, p.pages * page_size, "{name}: {}", p.key);
    }
    let index = open(&newest.key);
    let pages: u64 = own.iter().map(|p| p.pages).sum();
    assert_eq!(
        index.len() as u64,
        pages * HASH_LEN as u64,
        "{name}: {}",
        newest.key
    );
}

const RUNS: usize = 20;

#[test]
fn twenty_sealed_runs_to_three_sinks_store_nothing_readable_and_every_snapshot_restores() {
    let az = Remote::azure();
    let s3 = Remote::s3();
    let sections = format!("{}\n{}", az.section(""), s3.section(""));
    let s = Sealed::with_sinks(&sections, Some(s3));
    let ids = Identities::read_file(&s.p.join("key.txt")).unwrap();

    let mut secrets = Secrets::new();
    let mut taken: Vec<Taken> = Vec::new();
    let mut first: Option<(Vec<u8>, Vec<[u8; HASH_LEN]>)> = None;
    for n in 0..RUNS {
        if n > 0 {
            s.change(n);
        }
        let t = s.backup();
        // What the manifest seals describes the database as it is now.
        let image = checkpointed(&s.db);
        let opened = t.entry.opened(&ids).expect("the sealed facts open");
        assert_image(&opened, &image, &format!("run {n}"));
        let hashes = s.cached_hashes(&opened);
        secrets.add_snapshot(n, &image, &hashes, &opened);
        first.get_or_insert((image, hashes));
        taken.push(t);
    }

    // One chain in each sink, every snapshot sealed to the one recipient.
    let fp = fingerprint(&s.public);
    for sink in ["local", "azure", "s3"] {
        let rows = s.rows(sink);
        let stored: Vec<u64> = rows.iter().map(stored_bytes).collect();
        eprintln!("{sink}: stored bytes {stored:?}");
        assert_eq!(
            chain_depths(&rows),
            (0..RUNS as u64).collect::<Vec<_>>(),
            "{sink}"
        );
        let base = stored_bytes(&rows[0]);
        for r in &rows {
            assert_eq!(r["encrypted_to"], json!([fp]), "{sink}: {r}");
            if r["chain_depth"] != 0 {
                assert_eq!(r["kind"], "incremental", "{sink}: {r}");
                assert!(stored_bytes(r) * 4 < base, "{sink}: base {base}: {r}");
            }
        }
    }
    let listed: Vec<Value> = s.rows("local").iter().map(|r| r["id"].clone()).collect();
    let want: Vec<Value> = taken.iter().map(|t| json!(t.run_id)).collect();
    assert_eq!(listed, want);

    // Every snapshot restores with the identity to exactly what it was; the
    // newest also from Azurite and from moto alone.
    for (n, t) in taken.iter().enumerate() {
        let (_, dump) = s.restore(&format!("snapshot-{n}.db"), &["--id", &t.run_id]);
        assert_eq!(dump, t.dump_sha256, "snapshot {n}");
    }
    let newest = &taken[RUNS - 1];
    for sink in ["azure", "s3"] {
        let (text, dump) = s.restore(&format!("newest-from-{sink}.db"), &["--from", sink]);
        assert!(text.contains(&format!("(sink {sink},")), "{text}");
        assert_eq!(dump, newest.dump_sha256, "{sink}");
    }
    // `--at` a time between two snapshots, and exactly at one.
    let at = |i: usize| taken[i].entry.snapshot_at;
    for (time, want) in [(between(at(7), at(8)), 7), (at(13), 13)] {
        let (text, dump) = s.restore(&format!("at-{want}.db"), &["--at", &time.to_string()]);
        let t = &taken[want];
        assert!(
            text.contains(&format!("from snapshot {} ", t.run_id)),
            "{time}: expected snapshot {want}: {text}"
        );
        assert_eq!(dump, t.dump_sha256, "{time}");
    }

    let stores = [
        Store::Local(&s.p),
        Store::Remote(&az),
        Store::Remote(s.s3.as_ref().unwrap()),
    ];
    let (first_image, first_hashes) = first.unwrap();
    for store in &stores {
        assert_the_age_cli_opens(&s, store, &first_image, &first_hashes);
    }

    // Nothing stored shows the content, the table's name, a page's hash or
    // an unkeyed digest of the image, its pages or its schema.
    for store in &stores {
        let objects = store.objects();
        let name = store.name();
        let of_kind = |ext: &str| objects.iter().filter(|(k, _)| k.ends_with(ext)).count();
        assert!(
            of_kind(".pack") >= RUNS,
            "{name}: {} packs",
            of_kind(".pack")
        );
        assert_eq!(of_kind(".pageidx"), RUNS, "{name}");
        for (key, bytes) in &objects {
            if key.ends_with(".pack") || key.ends_with(".pageidx") {
                assert!(
                    bytes.starts_with(AGE_HEADER),
                    "{name}: {key} is not an age file"
                );
            }
            if let Some(what) = secrets.find(bytes) {
                panic!("{name}: {key} holds {what}");
            }
        }
        eprintln!("{name}: {} objects hold nothing readable", objects.len());
    }
}

#[test]
fn without_the_local_page_hashes_the_next_run_is_a_full_base_and_the_one_after_incremental() {
    let s = Sealed::new();
    let mut taken = vec![s.backup()];
    s.change(1);
    taken.push(s.backup());

    // The hashes the next run diffs against: in the state folder, readable
    // by this user alone.
    let dir = s.page_hashes();
    let files = all_files(&dir);
    assert!(!files.is_empty());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir) & 0o077, 0, "{dir:?}");
    for f in &files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    for n in [2, 3] {
        s.change(n);
        taken.push(s.backup());
    }
    let rows = s.rows("local");
    assert_eq!(chain_depths(&rows), [0, 1, 0, 1]);
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["full", "incremental", "full", "incremental"]);
    let stored: Vec<u64> = rows.iter().map(stored_bytes).collect();
    assert!(
        stored[2] * 2 > stored[0],
        "the new base stored less than half the first: {stored:?}"
    );
    assert!(stored[3] * 4 < stored[2], "{stored:?}");
    assert!(
        !all_files(&dir).is_empty(),
        "the state was not written again"
    );

    for (n, t) in taken.iter().enumerate() {
        let (_, dump) = s.restore(&format!("snapshot-{n}.db"), &["--id", &t.run_id]);
        assert_eq!(dump, t.dump_sha256, "snapshot {n}");
    }
}

#[test]
fn a_wrong_identity_cannot_decrypt_and_without_one_verify_checks_stored_bytes_only() {
    let s = Sealed::new();
    s.backup();
    s.change(1);
    let t = s.backup();
    keygen(s.p.path(), "other.txt");

    // No identity: the stored bytes check, the content is not checked, and it says so.
    let text = s.run_ok(&["verify", "--latest", "app"]);
    assert!(
        text.contains("stored bytes only")
            && text.contains("--identity")
            && !text.contains("CORRUPT"),
        "{text}"
    );

    // The wrong identity: a key problem (exit 2), never corruption; nothing
    // restored. verify says so as it does of a classic encrypted artifact.
    let wrong: [(&[&str], &[&str]); 3] = [
        (
            &["verify", "--latest", "app", "--identity", "other.txt"],
            &["not a recipient", "cannot open this backup"],
        ),
        (
            &[
                "restore",
                "app",
                "--to",
                "wrong.db",
                "--identity",
                "other.txt",
            ],
            &["cannot decrypt", "nothing was touched"],
        ),
        (
            &[
                "restore",
                "app",
                "--id",
                &t.run_id,
                "--to",
                "wrong.db",
                "--identity",
                "other.txt",
            ],
            &["cannot decrypt", "nothing was touched"],
        ),
    ];
    for (args, says) in wrong {
        let out = s.run(args);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            says.iter().all(|w| text.contains(w)) && !text.contains("CORRUPT"),
            "{args:?}: {text}"
        );
        assert!(!s.p.join("wrong.db").exists(), "{args:?}");
    }

    // The right one, from the environment: every check, rows counted inside.
    let key = s.p.join("key.txt");
    let with_key = |args: &[&str]| {
        let out = s
            .command(args)
            .env("SQLITE_BACKUP_IDENTITY_FILE", &key)
            .output()
            .unwrap();
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
        text
    };
    let text = with_key(&["verify", "--latest", "app"]);
    assert!(
        text.contains("OK: every check passed") && text.contains(&format!("{TABLE}: {ROWS} rows")),
        "{text}"
    );
    with_key(&["restore", "app", "--to", "right.db"]);
    assert_eq!(dump_sha256(&s.p, &s.p.join("right.db")), t.dump_sha256);
    let drill: Value = serde_json::from_str(
        &String::from_utf8(
            s.command(&["drill", "--json", "--identity", "key.txt"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(drill["ok"], true, "{drill}");
}

#[test]
fn a_flipped_byte_in_the_newest_runs_pack_is_named_and_restore_walks_back() {
    let s = Sealed::new();
    s.backup();
    s.change(1);
    let previous = s.backup();
    s.change(2);
    let newest = s.backup();
    let own = own_packs(&newest.entry)[0].key.clone();
    let previous_packs = &previous.entry.pages.as_ref().unwrap().packs;
    assert!(
        !previous_packs.iter().any(|p| p.key == own),
        "{own} is needed by the previous snapshot too"
    );
    let pack = s.p.backups().join(&own);
    flip_byte(&pack, std::fs::metadata(&pack).unwrap().len() as usize / 2);

    let out = s.run(&["verify", "--catalog", "--deep", "--identity", "key.txt"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&own), "names the pack: {text}");

    let (text, dump) = s.restore("walked.db", &[]);
    assert!(
        text.contains(&format!("walking back to {}", previous.run_id)),
        "{text}"
    );
    assert_eq!(
        dump, previous.dump_sha256,
        "walked back to the previous snapshot"
    );
}

#[test]
fn new_recipients_start_a_new_full_base_and_list_shows_who_each_snapshot_is_sealed_to() {
    let s = Sealed::new();
    let mut taken = vec![s.backup()];
    s.change(1);
    taken.push(s.backup());
    let new_public = keygen(s.p.path(), "new-key.txt");
    std::fs::write(
        s.p.join("recipients.txt"),
        format!("# the new backup key\n{new_public}\n"),
    )
    .unwrap();
    s.configure("recipients_file = \"recipients.txt\"", "");
    for n in [2, 3] {
        s.change(n);
        taken.push(s.backup());
    }

    let rows = s.rows("local");
    assert_eq!(chain_depths(&rows), [0, 1, 0, 1]);
    let (old, new) = (fingerprint(&s.public), fingerprint(&new_public));
    let sealed_to: Vec<&Value> = rows.iter().map(|r| &r["encrypted_to"]).collect();
    assert_eq!(
        sealed_to,
        [&json!([old]), &json!([old]), &json!([new]), &json!([new])]
    );
    let table = s.run_ok(&["list"]);
    for (t, fp) in taken.iter().zip([&old, &old, &new, &new]) {
        let line = table
            .lines()
            .find(|l| l.contains(&t.run_id))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(line.contains(fp.as_str()), "{fp}: {line}");
    }

    // The new base's pack opens with the new key only.
    let pack = s.p.backups().join(&own_packs(&taken[2].entry)[0].key);
    assert!(!decrypt(s.p.path(), "new-key.txt", &pack).is_empty());
    let old_key = Command::new("age")
        .args(["-d", "-i", "key.txt", "-o", "/dev/null"])
        .arg(&pack)
        .current_dir(s.p.path())
        .output()
        .unwrap();
    assert!(!old_key.status.success(), "the old key opens the new chain");

    // Each snapshot restores with the key it is sealed to, and only with that.
    for (n, identity) in [(1, "key.txt"), (3, "new-key.txt")] {
        let t = &taken[n];
        let (_, dump) = s.restore_with(identity, &format!("snapshot-{n}.db"), &["--id", &t.run_id]);
        assert_eq!(dump, t.dump_sha256, "snapshot {n}");
    }
    let out = s.run(&[
        "restore",
        "app",
        "--id",
        &taken[3].run_id,
        "--to",
        "old-key.db",
        "--identity",
        "key.txt",
    ]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cannot decrypt") && !text.contains("CORRUPT"),
        "{text}"
    );
}

/// Two passphrases share the fingerprint `passphrase`; a new one must still
/// start a new chain, or its snapshots would need both to restore.
#[test]
fn a_new_passphrase_starts_a_new_chain() {
    let s = Sealed::new();
    s.configure("passphrase_env = \"BACKUP_PASSPHRASE\"", "");
    let run = |pass: &str, args: &[&str]| {
        let out = s
            .command(args)
            .env("BACKUP_PASSPHRASE", pass)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            output_text(&out)
        );
        out
    };
    run("first passphrase", &["backup"]);
    s.change(1);
    let log = output_text(&run("second passphrase", &["backup"]));
    assert!(log.contains("full base"), "{log}");
    let listed = run("second passphrase", &["list", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(chain_depths(&rows), [0, 0]);
    let verified = run("second passphrase", &["verify", "--latest", "app"]);
    assert!(
        output_text(&verified).contains("every check passed"),
        "{}",
        output_text(&verified)
    );
}
