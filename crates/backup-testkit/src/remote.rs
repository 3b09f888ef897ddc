//! One face for the two object stores the kit runs (Azurite, moto), so a
//! test that does the same against both states only what differs: start the
//! server with one container / bucket, its config section, an in-process
//! sink, the binary with its credentials, objects read back, the catalog
//! and objects it holds; and pattern bytes streamed through a sink.
//!
//! ```no_run
//! use backup_testkit::remote::Remote;
//! let remote = Remote::s3();
//! let p = backup_testkit::testkit::Project::new();
//! p.demo_db("app.db", 200_000);
//! p.write_config(&format!("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n{}", remote.section("")));
//! remote.run_ok(&p, &["backup"]);
//! assert_eq!(remote.listed().len(), 1);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use backup_azure::ObjectStoreSink;
use backup_core::manifest::{Entry, Listed};
use backup_core::naming;
use backup_core::sink::{Sink, get_bytes};

use crate::azurite::Azurite;
use crate::moto::Moto;
use crate::testkit::{Project, output_text, sh};

pub const MIB: usize = 1024 * 1024;

/// The container (Azure) or bucket (S3) a [`Remote`] starts with.
pub const ROOT: &str = "backups";

/// A private Azurite or moto with the container / bucket [`ROOT`].
pub enum Remote {
    Azure(Azurite),
    S3(Moto),
}

impl Remote {
    pub fn azure() -> Self {
        let az = Azurite::start().unwrap_or_else(|e| panic!("{e}"));
        az.create_container(ROOT).unwrap_or_else(|e| panic!("{e}"));
        Self::Azure(az)
    }

    /// [`azure`](Self::azure) with every request counted
    /// ([`Azurite::start_counting`]).
    pub fn azure_counting() -> Self {
        let az = Azurite::start_counting().unwrap_or_else(|e| panic!("{e}"));
        az.create_container(ROOT).unwrap_or_else(|e| panic!("{e}"));
        Self::Azure(az)
    }

    pub fn s3() -> Self {
        let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
        moto.create_bucket(ROOT).unwrap_or_else(|e| panic!("{e}"));
        Self::S3(moto)
    }

    /// The sink's name in the CLI (`--from`, `list`, messages).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Azure(_) => "azure",
            Self::S3(_) => "s3",
        }
    }

    /// The Azurite of an Azure remote, for what only Azure has (SAS tokens).
    pub fn azurite(&self) -> &Azurite {
        match self {
            Self::Azure(az) => az,
            Self::S3(_) => panic!("an S3 remote has no Azurite"),
        }
    }

    /// The moto of an S3 remote, for what only S3 has (boto3, open uploads).
    pub fn moto(&self) -> &Moto {
        match self {
            Self::S3(moto) => moto,
            Self::Azure(_) => panic!("an Azure remote has no moto"),
        }
    }

    /// Keys of the multipart uploads still open in [`ROOT`], as boto3 lists
    /// them (S3 only: Azure never lists uncommitted blocks).
    pub fn open_uploads(&self) -> Vec<String> {
        self.moto()
            .open_multipart_uploads(ROOT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The config section for the binary, `extra` lines appended: one retry,
    /// and the smallest parts the service allows so that modest databases
    /// go through multipart uploads.
    pub fn section(&self, extra: &str) -> String {
        match self {
            Self::Azure(az) => format!(
                "[azure]\ncontainer = \"{ROOT}\"\nuse_emulator = true\nendpoint = \"{}\"\nmax_retries = 1\npart_size_mib = 1\n{extra}",
                az.account_endpoint()
            ),
            Self::S3(moto) => moto.section(ROOT, extra),
        }
    }

    /// An in-process sink on [`ROOT`] with the kit's credentials.
    pub fn sink(&self) -> ObjectStoreSink {
        match self {
            Self::Azure(az) => backup_azure::AzureSink::from_config(&az.sink_config(ROOT)),
            Self::S3(moto) => backup_s3::S3Sink::from_config(&moto.sink_config(ROOT)),
        }
        .expect("sink")
    }

    /// [`sink`](Self::sink) with parts of `part_size_mib`.
    pub fn sink_with_parts(&self, part_size_mib: usize) -> ObjectStoreSink {
        match self {
            Self::Azure(az) => {
                let mut cfg = az.sink_config(ROOT);
                cfg.part_size_mib = part_size_mib;
                backup_azure::AzureSink::from_config(&cfg)
            }
            Self::S3(moto) => {
                let mut cfg = moto.sink_config(ROOT);
                cfg.part_size_mib = part_size_mib;
                backup_s3::S3Sink::from_config(&cfg)
            }
        }
        .expect("sink")
    }

    /// The binary for `p`, with the server's credentials in its
    /// environment (S3 takes them from there; Azure's emulator switch needs
    /// none) and no AWS profile of the machine's user.
    pub fn command(&self, p: &Project, args: &[&str]) -> Command {
        let mut c = p.command(args);
        if let Self::S3(moto) = self {
            c.env_remove("AWS_PROFILE").env("HOME", p.path());
            for (k, v) in moto.env() {
                c.env(k, v);
            }
        }
        c
    }

    pub fn run(&self, p: &Project, args: &[&str]) -> Output {
        self.command(p, args).output().expect("run sqlite-backup")
    }

    /// Run, assert success and that no secret of the kit's user shows;
    /// returns stdout + stderr.
    pub fn run_ok(&self, p: &Project, args: &[&str]) -> String {
        let out = self.run(p, args);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?} failed:\n{text}");
        if let Self::S3(moto) = self {
            assert!(
                !text.contains(moto.secret_access_key()),
                "{args:?} leaked the secret:\n{text}"
            );
        }
        text
    }

    /// Take the server away from clients (a test then checks what a run
    /// left behind); [`restart`](Self::restart) brings it back with its data.
    pub fn stop(&mut self) {
        match self {
            Self::Azure(az) => az.stop(),
            Self::S3(moto) => moto.stop(),
        }
    }

    pub fn restart(&mut self) {
        match self {
            Self::Azure(az) => az.restart().unwrap_or_else(|e| panic!("{e}")),
            Self::S3(moto) => moto.restart().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// The catalog in the remote, newest first; every manifest must read.
    pub fn listed(&self) -> Vec<Listed> {
        crate::testkit::committed(&self.sink())
    }

    /// Every key in the remote.
    pub fn objects(&self) -> BTreeSet<String> {
        self.sink().list("").unwrap().into_iter().collect()
    }

    /// Write the object `key` to the file `to`: from S3 through boto3 (a
    /// client nobody here wrote), from Azure through the sink.
    pub fn download(&self, key: &str, to: &Path) {
        match self {
            Self::Azure(_) => {
                std::fs::write(to, get_bytes(&self.sink(), key).expect("download")).unwrap()
            }
            Self::S3(moto) => {
                let code = "s3.download_file(sys.argv[1], sys.argv[2], sys.argv[3])";
                let key = format!("sqlite/{key}");
                let path = to.to_str().expect("UTF-8 path");
                moto.boto3(code, &[ROOT, &key, path])
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    /// Download an entry's artifact and sidecar into `dir` and check them
    /// with `sha256sum -c`; returns the artifact's path.
    pub fn download_checked(&self, entry: &Entry, dir: &Path) -> PathBuf {
        let name = naming::file_name(&entry.key);
        self.download(&entry.key, &dir.join(name));
        self.download(&entry.sidecar_key, &dir.join(format!("{name}.sha256")));
        let ok = sh(dir, &format!("sha256sum -c '{name}.sha256'"));
        assert!(ok.trim().ends_with(": OK"), "{ok}");
        dir.join(name)
    }

    /// After a run this remote failed: nothing of it listed, no artifact.
    pub fn assert_nothing_half_done(&self) {
        assert!(self.listed().is_empty(), "a half-finished run is listed");
        let objects = self.objects();
        assert!(objects.iter().all(|k| !k.ends_with(".db")), "{objects:?}");
    }

    /// Three backups of `app.db`, then `prune` with nothing but the newest
    /// kept: exactly the older artifacts and their sidecars go.
    pub fn assert_prune_deletes_exactly_the_planned_objects(&self, p: &Project) {
        p.write_config(&format!(
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[retention]\nhot_days = 0\nwarm_days = 0\n\n{}",
            self.section("")
        ));
        // Runs within one second share a `{time}` name; the pipeline gives
        // the later ones their run id's suffix, so no need to wait.
        for _ in 0..3 {
            self.run_ok(p, &["backup"]);
        }
        let before = self.listed();
        assert_eq!(before.len(), 3);
        let objects_before = self.objects();
        self.run_ok(p, &["prune"]);
        let after = self.listed();
        assert_eq!(after.len(), 1);
        assert_eq!(
            after[0].entry.key, before[0].entry.key,
            "the newest must survive"
        );
        let removed: BTreeSet<String> = objects_before
            .difference(&self.objects())
            .cloned()
            .collect();
        let planned: BTreeSet<String> = before[1..]
            .iter()
            .flat_map(|l| [l.entry.key.clone(), l.entry.sidecar_key.clone()])
            .collect();
        assert_eq!(
            removed,
            planned,
            "{}: prune deleted something other than the planned objects",
            self.name()
        );
    }
}

/// With wrong credentials (as `run` passes them to the binary), `backup`
/// fails as an authentication error, and neither it nor `list`, a dry run
/// or `verify` shows `secret` (a part of the wrong credential).
pub fn assert_wrong_credentials_refused(run: impl Fn(&[&str]) -> Output, secret: &str) {
    let out = run(&["backup"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains(secret), "backup leaked the secret:\n{text}");
    for args in [
        &["list"][..],
        &["backup", "--dry-run"],
        &["verify", "--latest", "app"],
    ] {
        let text = output_text(&run(args));
        assert!(
            !text.contains(secret),
            "{args:?} leaked the secret:\n{text}"
        );
    }
}

/// `list --json` output: how many rows each sink has.
pub fn rows_per_sink(list_json: &str) -> BTreeMap<String, usize> {
    let rows: serde_json::Value = serde_json::from_str(list_json).expect("list --json");
    let mut counts = BTreeMap::new();
    for row in rows.as_array().expect("an array") {
        let sink = row["sink"].as_str().expect("a sink name");
        *counts.entry(sink.to_string()).or_default() += 1;
    }
    counts
}

/// Wait until the sink has a multipart upload open on the server (S3).
pub fn wait_for_open_upload(sink: &ObjectStoreSink) {
    let started = Instant::now();
    while sink.incomplete_uploads().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the multipart upload never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Deterministic, incompressible bytes; `at` is the absolute offset.
pub fn pattern_at(at: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let mut h = ((at + i) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        *b = (h.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 56) as u8;
    }
}

/// Stream `len` pattern bytes into `key` in odd-sized writes.
pub fn upload(sink: &dyn Sink, key: &str, len: usize) -> Result<u64, String> {
    let mut w = sink.create(key).map_err(|e| e.to_string())?;
    let mut chunk = vec![0u8; 100_003];
    let mut at = 0;
    while at < len {
        let n = chunk.len().min(len - at);
        pattern_at(at, &mut chunk[..n]);
        w.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        at += n;
    }
    w.finish().map_err(|e| e.to_string())
}

/// Read `key` back as a stream and compare with the pattern, never holding
/// the whole object.
pub fn assert_pattern(sink: &dyn Sink, key: &str, len: usize) {
    let mut r = sink.get(key).expect("get");
    let (mut got, mut want) = (vec![0u8; 65_537], vec![0u8; 65_537]);
    let mut at = 0;
    loop {
        let n = r.read(&mut got).expect("read");
        if n == 0 {
            break;
        }
        pattern_at(at, &mut want[..n]);
        assert!(got[..n] == want[..n], "bytes differ near offset {at}");
        at += n;
    }
    assert_eq!(at, len, "downloaded length");
}

/// Stream pattern bytes into `key`: `before` of them, then `cut` (which
/// takes the server away), then on until a write fails or `limit`, then
/// `finish`. The upload must fail; returns its error.
pub fn upload_cut_off(
    sink: &dyn Sink,
    key: &str,
    before: usize,
    cut: impl FnOnce(),
    limit: usize,
) -> String {
    let mut w = sink.create(key).unwrap();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut at = 0;
    while at < before {
        pattern_at(at, &mut chunk);
        w.write_all(&chunk).unwrap();
        at += chunk.len();
    }
    cut();
    while at < limit {
        pattern_at(at, &mut chunk);
        if let Err(e) = w.write_all(&chunk) {
            eprintln!("upload failed as it should: {e}");
            return e.to_string();
        }
        at += chunk.len();
    }
    let e = w.finish().expect_err("finish succeeded without a server");
    eprintln!("upload failed as it should: {e}");
    e.to_string()
}

/// The errors of every kind of request to a sink that must refuse them
/// all (wrong credentials): put, size, list, get (which must not look like a
/// missing object) and a streamed upload of `stream_len` bytes.
pub fn errors_of_every_request(sink: &dyn Sink, stream_len: usize) -> Vec<String> {
    let errors = [
        sink.put("a/b.json", b"{}").unwrap_err(),
        sink.size("a/b.json").unwrap_err(),
        sink.list("a").unwrap_err(),
        match sink.get("a/b.json") {
            Err(e) => e,
            Ok(_) => panic!("get with a wrong key succeeded"),
        },
    ];
    // An embedder tells a credentials problem by its type, not its words.
    for e in &errors {
        assert!(e.is_unauthorized(), "not typed as unauthorized: {e:?}");
    }
    let mut messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let mut w = sink.create("a/big.db").unwrap();
    let streamed = w
        .write_all(&vec![7u8; stream_len])
        .map_err(|e| e.to_string())
        .and_then(|()| w.finish().map_err(|e| e.to_string()));
    messages.push(streamed.unwrap_err());
    messages
}

/// Upload `mib` MiB to `key` in 128 KiB writes, then download it and
/// compare; returns the seconds each way. The data is one pre-generated MiB
/// repeated, so the figures are the sink and the server, not the test's
/// byte generator.
pub fn time_round_trip(sink: &dyn Sink, key: &str, mib: usize) -> (f64, f64) {
    let mut block = vec![0u8; MIB];
    pattern_at(0, &mut block);
    let len = mib * MIB;
    let started = Instant::now();
    let mut w = sink.create(key).unwrap();
    for _ in 0..mib {
        for chunk in block.chunks(128 * 1024) {
            w.write_all(chunk).unwrap();
        }
    }
    assert_eq!(w.finish().unwrap(), len as u64);
    let up = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut r = sink.get(key).unwrap();
    let mut buf = vec![0u8; 128 * 1024];
    let mut at = 0;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let off = at % MIB;
        let first = n.min(MIB - off);
        assert!(buf[..first] == block[off..off + first], "differs near {at}");
        assert!(buf[first..n] == block[..n - first], "differs near {at}");
        at += n;
    }
    assert_eq!(at, len);
    (up, started.elapsed().as_secs_f64())
}
