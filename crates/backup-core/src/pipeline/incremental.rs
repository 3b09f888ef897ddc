//! An incremental-mode run: hash every page of the pinned snapshot, then
//! store per sink only the pages that differ from its previous snapshot
//! (see [`crate::incremental`]).

use std::io::{self, Write};
use std::time::Instant;

use jiff::Timestamp;
use tracing::{info, warn};

use super::commit::{ManifestFacts, Produced, Stored, finish_uploads, new_entry};
use super::fan_out::{Cancellable, FanOut, compress_into, open_fan};
use super::full_image::backup_streams;
use super::report::Written;
use super::report::sink_error;
use super::twin_check::read_while_checking;
use super::{BackupError, Observer, PlannedArtifact, RunOpts, SnapshotFailure, Target};
use crate::compaction;
use crate::database::{CheckLevel, Database};
use crate::digest::{Sha256, Sidecar};
use crate::fsutil;
use crate::incremental;
use crate::incremental::local_packs::LocalPacks;
use crate::incremental::{Decision, PackWriter, PageHash};
use crate::intent;
use crate::manifest::{Entry, SealedFacts};
use crate::mirror::Mirror;
use crate::naming;
use crate::page_map::{self, PageMap};
use crate::sink::{Placement, Sink, SinkError};
use crate::snapshot::{PageStream, SnapshotStats};
use crate::verify::{self, Checks, DbReport};
use crate::wal_frames;
use crate::xor_pack;

use super::wal_hint;

/// Calls `each(page number, page)` for every `page_size` bytes written.
struct PageSplit<F> {
    page_size: usize,
    buf: Vec<u8>,
    next: u64,
    each: F,
}

impl<F: FnMut(u64, &[u8]) -> io::Result<()>> Write for PageSplit<F> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= self.page_size {
                (self.each)(self.next, &data[..self.page_size])?;
                self.next += 1;
                data = &data[self.page_size..];
                continue;
            }
            let take = (self.page_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.page_size {
                (self.each)(self.next, &self.buf)?;
                self.next += 1;
                self.buf.clear();
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Run every page of `stream` through `each`, stopping when the run is
/// cancelled.
fn for_each_page(
    stream: &PageStream,
    observer: &dyn Observer,
    each: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut split = PageSplit {
        page_size: stream.page_size() as usize,
        buf: Vec::new(),
        next: 0,
        each,
    };
    stream.copy_to(
        &mut Cancellable {
            inner: &mut split,
            observer,
        },
        &mut |_, _| {},
    )?;
    Ok(())
}

/// One sink's share of an incremental run, decided before pass 2.
struct Chain<'a> {
    artifact: &'a PlannedArtifact,
    sink: &'a dyn Sink,
    /// The snapshot this one builds on; `None` for a full base.
    previous: Option<PageMap>,
    /// Its runs, decoded once (taken by [`Progress::new`]).
    previous_runs: Vec<page_map::Run>,
    /// Which pages to store: all of them for a full base.
    changed: Option<Vec<bool>>,
    /// Storing XOR deltas against the local image: the previous snapshot's
    /// XOR packs this run folds into its own (indexes into its packs).
    xor: Option<Vec<usize>>,
    /// Pages of the previous snapshot's image (0 for a full base).
    previous_pages: u64,
    index_key: String,
    base: String,
    /// A sealed chain's recipients: packs and index are age files.
    seal: Option<crate::encryption::Recipients>,
    /// Copies of its XOR packs, which its folds read: a sealed chain's
    /// plaintext (it cannot open the sealed ones), or an unsealed chain's
    /// on an object store (saving a GET each).
    local: Option<LocalPacks>,
}

impl Chain<'_> {
    fn stores(&self, page: u64) -> bool {
        self.changed.as_ref().is_none_or(|c| c[page as usize])
    }
}

/// A chain being written in pass 2.
struct Progress<'a> {
    packs: PackWriter<'a>,
    /// The page map of a chain of plain packs.
    map: Option<page_map::Builder>,
    /// The deltas of a chain of XOR packs.
    xor: Option<Deltas>,
    failed: Option<SinkError>,
}

/// An XOR chain's run in pass 2: the packs it folds, read page by page
/// alongside the snapshot, and a page of scratch for each.
struct Deltas {
    folded: Vec<xor_pack::Reader>,
    delta: Vec<u8>,
    scratch: Vec<u8>,
}

/// Pass 1's result: every page's hash, and the check of the same snapshot.
struct Hashed {
    /// The check that ran: the configured level, or only the schema checks
    /// when the WAL named the pages.
    checked_with: CheckLevel,
    /// How many pages were read, when the WAL named them (else all were).
    read_from_wal: Option<usize>,
    hashes: Vec<PageHash>,
    db_sha256: String,
    hashes_sha256: String,
    report: DbReport,
}

/// An incremental-mode backup (see [`crate::incremental`]): hash every page
/// of the pinned snapshot, check the snapshot, then store per sink only the
/// pages that differ from that sink's previous snapshot. Cold-only targets
/// get one classic full artifact of the same snapshot instead (a phase seal
/// restores from one object), written during the same pass.
pub(super) fn backup_incremental(
    db: &Database,
    artifacts: &[PlannedArtifact],
    targets: &[Target],
    opts: &RunOpts<'_>,
    run_id: &str,
) -> Result<(Written, Vec<BackupError>), Vec<BackupError>> {
    let Some(stream) = PageStream::open(&db.path).map_err(snap_err)? else {
        warn!(
            "label={}: incremental mode needs a WAL database and sqlite_dbpage; taking a full artifact",
            db.label
        );
        return backup_streams(db, artifacts, targets, opts, run_id, Timestamp::now());
    };
    let (cold, artifacts): (Vec<PlannedArtifact>, Vec<PlannedArtifact>) = artifacts
        .iter()
        .cloned()
        .partition(|a| targets[a.target].cold_only);
    let started = Instant::now();
    // A run with a seal reads every page anyway (the cold artifact holds
    // them all), so it also takes the whole check and image SHA-256.
    let hashed = hash_and_check(&stream, db, opts, !cold.is_empty())?;
    info!(
        label = %db.label,
        pages = hashed.hashes.len(),
        read = %hashed
            .read_from_wal
            .map_or("all".to_string(), |n| format!("{n} (named by the WAL)")),
        ms = started.elapsed().as_millis() as u64,
        "pages hashed"
    );
    let now = Timestamp::now();
    let mut errors = Vec::new();
    let mut seal = open_seal(db, &cold, targets, run_id, &mut errors);
    let mut mirror = opts.page_cache.as_deref().and_then(|dir| {
        Mirror::open(dir, &db.label, stream.page_size())
            .inspect_err(|e| warn!(label = %db.label, "no local image for XOR deltas: {e}"))
            .ok()
    });
    let mut chains = decide_chains(
        db,
        &artifacts,
        targets,
        opts,
        run_id,
        &hashed.hashes,
        stream.page_size(),
        now,
        &mut mirror,
        &mut errors,
    );
    let mut progress: Vec<Progress<'_>> = chains
        .iter_mut()
        .map(|c| Progress::new(c, stream.page_size()))
        .collect();
    let (copied, sealed) = store_pages(
        &stream,
        &hashed,
        &chains,
        &mut progress,
        seal.as_mut().map(|(_, fan)| (fan, db.encryption.as_ref())),
        mirror.as_ref(),
        opts,
    );
    if let Err(e) = copied {
        if let Some((_, fan)) = seal {
            fan.abort();
        }
        return Err(snap_err(SnapshotFailure::Read(e)));
    }
    let stats = match &opts.held {
        Some(held) => held.keep(&db.path, stream),
        None => stream.finish(),
    }
    .map_err(snap_err)?;
    opts.observer
        .snapshot_progress(&db.label, stats.page_count, stats.page_count);
    let mut written = Vec::new();
    if let (Some((planned, fan)), Some(sealed)) = (seal, sealed) {
        let seal = Seal {
            planned,
            fan,
            sealed,
        };
        let (w, e) = seal.finish(db, targets, opts, &stats, &hashed, started);
        written.extend(w);
        errors.extend(e);
    }
    let (w, e) = commit_chains(db, &chains, progress, &hashed, &stats, opts, started);
    written.extend(w);
    errors.extend(e);
    Ok((written, errors))
}

/// The fan-out to the cold-only targets (one classic full artifact), if
/// any of them opened; failures to open go to `errors`.
fn open_seal(
    db: &Database,
    cold: &[PlannedArtifact],
    targets: &[Target],
    run_id: &str,
    errors: &mut Vec<BackupError>,
) -> Option<(Vec<PlannedArtifact>, FanOut)> {
    if cold.is_empty() {
        return None;
    }
    match open_fan(db, cold, targets, run_id) {
        Ok((planned, fan, open_errors)) => {
            errors.extend(open_errors);
            (!fan.writers.is_empty()).then_some((planned, fan))
        }
        Err(e) => {
            errors.extend(e);
            None
        }
    }
}

/// One [`Chain`] per sink that can take part; the others go to `errors`.
#[allow(clippy::too_many_arguments)]
fn decide_chains<'a>(
    db: &Database,
    artifacts: &'a [PlannedArtifact],
    targets: &'a [Target],
    opts: &RunOpts<'_>,
    run_id: &str,
    hashes: &[PageHash],
    page_size: u64,
    now: Timestamp,
    mirror: &mut Option<Mirror>,
    errors: &mut Vec<BackupError>,
) -> Vec<Chain<'a>> {
    let mut newest = Vec::new();
    for a in artifacts {
        let sink = targets[a.target].sink.as_ref();
        match incremental::previous(sink, db) {
            Ok(previous) => newest.push((a, sink, previous)),
            Err(e) => errors.push(sink_error(&a.sink, e)),
        }
    }
    // Before any chain reads the local image, bring it to what the sinks
    // published: the last run's pages, if its manifest made it.
    if let Some(m) = mirror.as_mut() {
        let published: Vec<&str> = newest
            .iter()
            .filter_map(|(_, _, p)| p.as_ref()?.pages.as_ref()?.hashes_sha256.as_deref())
            .collect();
        if let Err(e) = m.settle(&published) {
            warn!(label = %db.label, "cannot update the local image: {e}");
            *mirror = None;
        }
    }
    let mut chains = Vec::new();
    for (a, sink, previous) in newest {
        let decided = decide_chain(
            db,
            a,
            sink,
            previous,
            opts,
            run_id,
            hashes,
            page_size,
            now,
            mirror.as_ref(),
        );
        match decided {
            Ok(chain) => chains.push(chain),
            Err(e) => errors.push(sink_error(&a.sink, e)),
        }
    }
    chains
}

/// Pass 2, on the same pinned snapshot: each sink's new pages into its
/// packs, and its page map. The seal's compressor (and encryptor, when the
/// database has recipients) is fed the same pages; a seal that fails stops
/// being fed, and the chains carry on. Returns how reading the snapshot
/// went and, with a seal, how compressing it went.
fn store_pages(
    stream: &PageStream,
    hashed: &Hashed,
    chains: &[Chain<'_>],
    progress: &mut [Progress<'_>],
    seal: Option<(&mut FanOut, Option<&crate::encryption::Recipients>)>,
    mirror: Option<&Mirror>,
    opts: &RunOpts<'_>,
) -> (io::Result<()>, Option<io::Result<(String, u64)>>) {
    let total = hashed.hashes.len() as u64;
    let sparse = if seal.is_some() {
        None
    } else {
        sparse_pages(chains, total)
    };
    // The new image goes to the local one by way of a staging file, whole
    // when every page is read.
    let mut staging = mirror.filter(|_| !chains.is_empty()).and_then(|m| {
        m.stage(sparse.is_none())
            .inspect_err(|e| warn!("cannot stage the local image for XOR deltas: {e}"))
            .ok()
    });
    let mut previous = Vec::new();
    let mut pages = |i: u64, page: Option<&[u8]>| {
        let hash = &hashed.hashes[i as usize];
        // The page's previous version, for the chains storing its delta.
        let xor_changed = chains
            .iter()
            .any(|c| c.xor.is_some() && c.stores(i) && i < c.previous_pages);
        let prev = match (mirror, page) {
            (Some(m), Some(p)) if xor_changed => {
                previous.resize(p.len(), 0);
                m.read(i, &mut previous)?;
                Some(previous.as_slice())
            }
            _ => None,
        };
        for (chain, p) in chains.iter().zip(progress.iter_mut()) {
            p.add(chain, i, page, hash, prev);
        }
        // A failed write only costs a later run a full base: without its
        // staged image the local one stays at the previous snapshot.
        if let (Some(s), Some(p)) = (staging.as_mut(), page)
            && (sparse.is_none() || chains.iter().any(|c| c.stores(i)))
            && let Err(e) = s.page(i, p)
        {
            warn!("cannot stage the local image for XOR deltas: {e}");
            staging = None;
        }
        Ok(())
    };
    // Staged under what the manifests will record (a sealed chain's tag),
    // which is what the next run finds published.
    // Every chain of one database seals alike.
    let sealing = chains.iter().find_map(|c| c.seal.as_ref());
    let recorded = opts
        .page_cache
        .as_deref()
        .and_then(|dir| incremental::recorded_digest(dir, &hashed.hashes_sha256, sealing));
    let staged = |copied: io::Result<()>, staging: Option<crate::mirror::Staging>| {
        if let Some(s) = staging
            && let Some(recorded) = &recorded
            && copied.is_ok()
            && let Err(e) = s.finish(recorded, total)
        {
            warn!("cannot stage the local image for XOR deltas: {e}");
        }
        copied
    };
    let Some((fan, encryption)) = seal else {
        let copied = match &sparse {
            Some(wanted) => read_sparse(stream, wanted, total, opts.observer, &mut pages),
            None => for_each_page(stream, opts.observer, |i, page| pages(i, Some(page))),
        };
        return (staged(copied, staging), None);
    };
    let mut copied = Ok(());
    let sealed = compress_into(fan, &opts.compression, encryption, opts.observer, |out| {
        let mut seal_failed = None;
        copied = for_each_page(stream, opts.observer, |i, page| {
            if seal_failed.is_none()
                && let Err(e) = out.write_all(page)
            {
                seal_failed = Some(e);
            }
            pages(i, Some(page))
        });
        seal_failed.map_or(Ok(()), Err)
    });
    (staged(copied, staging), Some(sealed))
}

/// The pages some chain stores, when they are few enough that looking each
/// up costs less than reading the whole snapshot again (every chain builds
/// on a previous snapshot, and under a quarter of the pages changed).
fn sparse_pages(chains: &[Chain<'_>], total: u64) -> Option<Vec<u64>> {
    let changed: Vec<&Vec<bool>> = chains
        .iter()
        .map(|c| c.changed.as_ref())
        .collect::<Option<_>>()?;
    let wanted: Vec<u64> = (0..total)
        .filter(|&i| changed.iter().any(|c| c[i as usize]))
        .collect();
    (wanted.len() as u64 * 4 <= total).then_some(wanted)
}

/// Visit every page number in order: the `wanted` ones with their bytes,
/// the others without (they did not change for any chain).
fn read_sparse(
    stream: &PageStream,
    wanted: &[u64],
    total: u64,
    observer: &dyn Observer,
    visit: &mut impl FnMut(u64, Option<&[u8]>) -> io::Result<()>,
) -> io::Result<()> {
    let mut next = 0;
    stream.read_pages(wanted, |i, page| {
        if observer.cancelled() {
            return Err(io::Error::other(super::INTERRUPTED));
        }
        for skipped in next..i {
            visit(skipped, None)?;
        }
        next = i + 1;
        visit(i, Some(page))
    })?;
    for skipped in next..total {
        visit(skipped, None)?;
    }
    Ok(())
}

/// Close each chain's packs and store its index; the manifest entries of
/// the chains that made it, and the errors of those that did not.
fn commit_chains(
    db: &Database,
    chains: &[Chain<'_>],
    progress: Vec<Progress<'_>>,
    hashed: &Hashed,
    stats: &SnapshotStats,
    opts: &RunOpts<'_>,
    started: Instant,
) -> (Written, Vec<BackupError>) {
    let (mut written, mut errors) = (Vec::new(), Vec::new());
    let facts = hashed.report.facts.clone().unwrap_or_default();
    let clear = SealedFacts {
        db_sha256: hashed.db_sha256.clone(),
        schema_sha256: facts.schema_sha256,
        row_counts: facts.row_counts,
        // In the clear, a chain's page map holds this digest itself.
        pages_sha256: db
            .encryption
            .is_some()
            .then(|| hashed.hashes_sha256.clone()),
    };
    let recorded = match ManifestFacts::new(db, clear) {
        Ok(recorded) => recorded,
        Err(e) => {
            for chain in chains {
                errors.push(sink_error(
                    &chain.artifact.sink,
                    format!("sealing the manifest facts: {e}"),
                ));
            }
            return (written, errors);
        }
    };
    let source_mode = fsutil::mode_of(&db.path).ok();
    for (chain, p) in chains.iter().zip(progress) {
        let committed = p
            .commit(chain, hashed, stats, opts, &db.label)
            .map(|(map, stored)| {
                info!(
                    label = %db.label,
                    sink = %chain.artifact.sink,
                    depth = map.chain_depth,
                    stored_bytes = map.stored_bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "incremental done"
                );
                let stored = Stored {
                    facts: recorded.clear.clone(),
                    ..stored
                };
                Entry {
                    pages: Some(map),
                    verified_with: hashed.checked_with,
                    encrypted_to: recorded.encrypted_to.clone(),
                    sealed: recorded.sealed.clone(),
                    ..new_entry(db, opts, stats, source_mode, stored)
                }
            });
        match committed {
            Ok(entry) => written.push((chain.artifact.sink.clone(), entry)),
            Err(e) => errors.push(sink_error(&chain.artifact.sink, e)),
        }
    }
    (written, errors)
}

fn snap_err(e: impl Into<SnapshotFailure>) -> Vec<BackupError> {
    vec![BackupError::Snapshot(e.into())]
}

/// Pass 1: the hash of every page. When the WAL proves which pages changed
/// since the previous run ([`wal_hint`]), only those are read and hashed
/// again, the schema checks run on the pinned snapshot, and the image has
/// no whole-image SHA-256 (its digest is the page hashes'). When it cannot,
/// every page is read and hashed; with the whole-image SHA-256 and the
/// post-backup check (on a twin connection to the same snapshot) when no
/// full check within the hour vouches for the file, and always when
/// `every_page`.
fn hash_and_check(
    stream: &PageStream,
    db: &Database,
    opts: &RunOpts<'_>,
    every_page: bool,
) -> Result<Hashed, Vec<BackupError>> {
    let mark = wal_frames::mark(stream.connection(), &db.path);
    let now = Timestamp::now();
    let page_count = stream.size() / stream.page_size();
    let read = match opts.page_cache.as_deref() {
        Some(dir) if !every_page => {
            wal_hint::known(dir, &db.label, &db.path, mark.as_ref(), page_count, now)
        }
        _ => wal_hint::Read::Verified,
    };
    let (hashed, full_read_at) = match read {
        wal_hint::Read::Changed(known) => {
            let at = known.full_read_at;
            (hash_changed(stream, db, opts, known)?, at)
        }
        wal_hint::Read::Rescan { full_read_at } => {
            (hash_every_page(stream, db, opts, false)?, full_read_at)
        }
        wal_hint::Read::Verified => (hash_every_page(stream, db, opts, true)?, now),
    };
    if let Some(dir) = opts.page_cache.as_deref() {
        wal_hint::remember(
            dir,
            &db.label,
            mark,
            &hashed.hashes,
            &hashed.hashes_sha256,
            full_read_at,
        );
    }
    Ok(hashed)
}

/// Read and hash every page. `verified`: with the whole-image SHA-256, the
/// row counts and the configured page-by-page check, on a twin connection
/// while the pages stream; else only the schema checks, as
/// [`hash_changed`] runs.
fn hash_every_page(
    stream: &PageStream,
    db: &Database,
    opts: &RunOpts<'_>,
    verified: bool,
) -> Result<Hashed, Vec<BackupError>> {
    let mut hashes = Vec::new();
    if !verified {
        for_each_page(stream, opts.observer, |_, page| {
            hashes.push(incremental::page_hash(page));
            Ok(())
        })
        .map_err(|e| snap_err(SnapshotFailure::Read(e)))?;
        return Ok(Hashed {
            read_from_wal: None,
            ..schema_checked(stream, db, hashes)?
        });
    }
    let checks = Checks::after_backup(db, opts.verify_level);
    let mut image = Sha256::new();
    let (hashed, report) = read_while_checking(stream, &checks, || {
        for_each_page(stream, opts.observer, |_, page| {
            image.update(page);
            hashes.push(incremental::page_hash(page));
            Ok(())
        })
    })
    .map_err(snap_err)?;
    hashed.map_err(|e| snap_err(SnapshotFailure::Read(e)))?;
    let report = checked(report)?;
    Ok(Hashed {
        checked_with: opts.verify_level,
        read_from_wal: None,
        db_sha256: image.finish_hex(),
        hashes_sha256: incremental::hashes_digest(&hashes),
        hashes,
        report,
    })
}

/// Hash again only the pages the WAL names, on top of the previous image's
/// hashes.
fn hash_changed(
    stream: &PageStream,
    db: &Database,
    opts: &RunOpts<'_>,
    known: wal_hint::Known,
) -> Result<Hashed, Vec<BackupError>> {
    let page_count = (stream.size() / stream.page_size()) as usize;
    let mut hashes = known.hashes;
    hashes.resize(page_count, [0; incremental::HASH_LEN]);
    stream
        .read_pages(&known.changed, |i, page| {
            if opts.observer.cancelled() {
                return Err(io::Error::other(super::INTERRUPTED));
            }
            hashes[i as usize] = incremental::page_hash(page);
            Ok(())
        })
        .map_err(|e| snap_err(SnapshotFailure::Read(e)))?;
    Ok(Hashed {
        read_from_wal: Some(known.changed.len()),
        ..schema_checked(stream, db, hashes)?
    })
}

/// An image whose pages were hashed without the page-by-page check: the
/// schema checks (required tables, check queries) run on the snapshot; the
/// `quick_check`, the row counts (`count(*)` visits every leaf page of a
/// table) and the whole-image SHA-256 wait for the next verified full read.
fn schema_checked(
    stream: &PageStream,
    db: &Database,
    hashes: Vec<PageHash>,
) -> Result<Hashed, Vec<BackupError>> {
    let checks = Checks {
        skip_row_counts: true,
        ..Checks::after_backup(db, CheckLevel::Schema)
    };
    let report = checked(verify::check_connection(stream.connection(), &checks))?;
    Ok(Hashed {
        checked_with: CheckLevel::Schema,
        read_from_wal: None,
        db_sha256: String::new(),
        hashes_sha256: incremental::hashes_digest(&hashes),
        hashes,
        report,
    })
}

fn checked(report: DbReport) -> Result<DbReport, Vec<BackupError>> {
    if report.ok() {
        Ok(report)
    } else {
        Err(vec![BackupError::Check {
            problems: report.problems.clone(),
        }])
    }
}

/// Whether `a`'s sink continues its chain or starts a new base, from its
/// previous snapshot's page hashes (the local cache, else its page index);
/// records the keys the run will write there.
#[allow(clippy::too_many_arguments)]
fn decide_chain<'a>(
    db: &Database,
    a: &'a PlannedArtifact,
    sink: &'a dyn Sink,
    previous: Option<Entry>,
    opts: &RunOpts<'_>,
    run_id: &str,
    hashes: &[PageHash],
    page_size: u64,
    now: Timestamp,
    mirror: Option<&Mirror>,
) -> Result<Chain<'a>, SinkError> {
    let cached = |p: &Entry| {
        let dir = opts.page_cache.as_deref()?;
        incremental::cached_hashes(dir, &a.sink, p, db.encryption.as_ref())
    };
    let copies = opts
        .page_cache
        .as_deref()
        .map(|dir| LocalPacks::new(dir, &a.sink, &db.label));
    // A sealed chain folds from its copies, as it cannot open its packs; an
    // unsealed one on an object store from its copies when they check out,
    // rather than reading back over the network what it wrote a few runs
    // ago (about a GET a run at one run a second).
    let sealed = db.encryption.is_some();
    let local = copies
        .clone()
        .filter(|_| sealed || sink.placement() == Placement::Remote);
    let prev_hashes = match &previous {
        Some(p) => match cached(p).map_or_else(|| incremental::load_hashes(sink, p), Ok) {
            Ok(h) => Some(h),
            Err(e) => {
                warn!("sink {}: {e}; starting a new chain", a.sink);
                None
            }
        },
        None => None,
    };
    let decision = incremental::decide(
        previous.as_ref().zip(prev_hashes.as_deref()),
        page_size,
        hashes,
        now,
        &opts.incremental,
        db.encryption.as_ref().map_or(&[][..], |r| r.fingerprints()),
    );
    let previous_pages = previous.as_ref().map_or(0, |p| p.page_count);
    // Building on the previous snapshot needs its runs, decoded once.
    let (previous, previous_runs, changed, xor) = match (decision, previous) {
        (Decision::Incremental(changed), Some(p)) => 'built: {
            let map = p.pages.expect("an incremental snapshot has a map");
            if let Err(why) = map.check(p.page_count) {
                info!(
                    label = %db.label,
                    sink = %a.sink,
                    "full base (previous page map: {why})"
                );
                break 'built (None, Vec::new(), None, None);
            }
            let prev_hashes = prev_hashes.as_deref().unwrap_or_default();
            match xor_unready(mirror, &changed, prev_hashes, p.page_count) {
                None => {
                    let new = changed.iter().filter(|c| **c).count() as u64;
                    let settled = compaction::settled_pages(page_size);
                    let folded = compaction::fold_xor(&map.packs, new, settled);
                    let lost = local
                        .as_ref()
                        .filter(|_| sealed)
                        .and_then(|l| folded.iter().map(|&i| &map.packs[i]).find(|p| !l.usable(p)));
                    if let Some(p) = lost {
                        info!(
                            label = %db.label,
                            sink = %a.sink,
                            "full base (no usable local copy of sealed pack {} to fold)",
                            p.key
                        );
                        break 'built (None, Vec::new(), None, None);
                    }
                    if !folded.is_empty() {
                        info!(
                            label = %db.label,
                            sink = %a.sink,
                            packs = folded.len(),
                            deltas = folded.iter().map(|&i| map.packs[i].pages).sum::<u64>(),
                            "packs folded"
                        );
                    }
                    (Some(map), Vec::new(), Some(changed), Some(folded))
                }
                Some(why) if map.has_xor() => {
                    info!(label = %db.label, sink = %a.sink, "full base ({why})");
                    (None, Vec::new(), None, None)
                }
                Some(_) => match map.runs.list(p.page_count).map(|r| r.into_owned()) {
                    Ok(runs) => {
                        let mut changed = changed;
                        let folded =
                            compaction::fold(&runs, map.packs.len(), &mut changed, page_size);
                        if folded.packs > 0 {
                            info!(
                                "packs folded label={} sink={} packs={} pages={}",
                                db.label, a.sink, folded.packs, folded.pages
                            );
                        }
                        (Some(map), runs, Some(changed), None)
                    }
                    Err(why) => {
                        info!(
                            label = %db.label,
                            sink = %a.sink,
                            "full base (previous page map: {why})"
                        );
                        (None, Vec::new(), None, None)
                    }
                },
            }
        }
        (Decision::Full(why), _) => {
            info!(label = %db.label, sink = %a.sink, "full base ({why})");
            (None, Vec::new(), None, None)
        }
        (Decision::Incremental(_), None) => (None, Vec::new(), None, None),
    };
    if let Some(l) = &copies {
        // Copies of packs the sink's newest snapshot can still fold, and
        // nothing else (a full base folds nothing; a chain into a local
        // folder reads its packs back; copies left from another chain go).
        let settled = compaction::settled_pages(page_size);
        let foldable = previous
            .iter()
            .filter(|_| local.is_some())
            .flat_map(|m| &m.packs)
            .filter(|p| p.xor && p.pages < settled);
        if let Err(e) = l.retain(foldable) {
            warn!("sink {}: cannot remove local copies of packs: {e}", a.sink);
        }
    }
    let stem = match a.key.rfind(".db") {
        Some(i) => &a.key[..i],
        None => a.key.as_str(),
    };
    let suffix = run_id.rsplit('-').next().unwrap_or(run_id);
    let base = format!("{stem}-{suffix}");
    let index_key = format!("{base}.pageidx");
    let folded_deltas: u64 = match (&xor, &previous) {
        (Some(folded), Some(m)) => folded.iter().map(|&i| m.packs[i].pages).sum(),
        _ => 0,
    };
    let stores = folded_deltas
        + changed
            .as_ref()
            .map_or(hashes.len(), |c| c.iter().filter(|c| **c).count()) as u64;
    let packs = (stores * page_size).div_ceil(incremental::PACK_RAW_BYTES) + 1;
    let mut keys = vec![index_key.clone(), naming::sidecar_key(&index_key)];
    keys.extend((0..packs as usize).map(|n| PackWriter::pack_key(&base, n)));
    let intent = intent::Intent {
        run_id: run_id.to_string(),
        keys,
    };
    if let Err(e) = intent::record(sink, &db.label, &intent) {
        warn!("sink {}: cannot record what this run writes: {e}", a.sink);
    }
    Ok(Chain {
        artifact: a,
        sink,
        previous,
        previous_runs,
        changed,
        xor,
        previous_pages,
        index_key,
        base,
        seal: db.encryption.clone(),
        local,
    })
}

/// Why this chain cannot store XOR deltas against the local image: none, an
/// image that shrank (a delta needs its page's whole history), or a page
/// it changes whose local copy is not the previous snapshot's.
fn xor_unready(
    mirror: Option<&Mirror>,
    changed: &[bool],
    prev_hashes: &[PageHash],
    prev_pages: u64,
) -> Option<String> {
    let Some(mirror) = mirror else {
        return Some("no local image of the previous snapshot".into());
    };
    if (changed.len() as u64) < prev_pages {
        return Some(format!(
            "the image shrank from {prev_pages} to {} pages",
            changed.len()
        ));
    }
    let mut buf = Vec::new();
    for (i, _) in changed.iter().enumerate().filter(|(_, c)| **c) {
        let Some(hash) = prev_hashes.get(i).filter(|_| (i as u64) < prev_pages) else {
            continue;
        };
        buf.resize(mirror.page_size() as usize, 0);
        match mirror.matches(i as u64, hash, &mut buf) {
            Ok(true) => {}
            Ok(false) => {
                return Some(format!(
                    "the local image's page {i} is not the previous snapshot's"
                ));
            }
            Err(e) => return Some(format!("cannot read the local image: {e}")),
        }
    }
    None
}

impl<'a> Progress<'a> {
    fn new(chain: &mut Chain<'a>, page_size: u64) -> Self {
        // Packs are always zstd at its default level (XOR packs at their
        // own): they are read page by page on restore, whatever the
        // configured artifact format.
        let level = zstd::DEFAULT_COMPRESSION_LEVEL;
        if let (Some(folded), Some(m)) = (&chain.xor, &chain.previous) {
            let mut failed = None;
            let folded = folded
                .iter()
                .filter_map(|&i| {
                    let p = &m.packs[i];
                    match &chain.local {
                        Some(local) if chain.seal.is_some() => local.open(p),
                        // Checked whole before use, as a sealed chain's are
                        // when it decides to fold.
                        Some(local) if local.usable(p) => local.open(p),
                        _ => xor_pack::Reader::open(chain.sink, p, None),
                    }
                    .map_err(|p| failed.get_or_insert(fold_error(p)))
                    .ok()
                })
                .collect();
            return Self {
                packs: PackWriter::xor(chain.sink, &chain.base, &chain.index_key)
                    .sealed_to(chain.seal.clone(), chain.local.clone()),
                map: None,
                xor: Some(Deltas {
                    folded,
                    delta: vec![0; page_size as usize],
                    scratch: vec![0; page_size as usize],
                }),
                failed,
            };
        }
        let packs = PackWriter::new(chain.sink, &chain.base, &chain.index_key, level)
            .sealed_to(chain.seal.clone(), None);
        let map = match &chain.previous {
            Some(m) => {
                page_map::Builder::on(std::mem::take(&mut chain.previous_runs), m.packs.len())
            }
            None => page_map::Builder::full(),
        };
        Self {
            packs,
            map: Some(map),
            xor: None,
            failed: None,
        }
    }

    /// Record page `page_no`; `page` is `None` only for a page no chain
    /// stores, and `previous` its previous version when an XOR chain
    /// stores it.
    fn add(
        &mut self,
        chain: &Chain<'_>,
        page_no: u64,
        page: Option<&[u8]>,
        hash: &PageHash,
        previous: Option<&[u8]>,
    ) {
        if self.failed.is_some() {
            return;
        }
        if let Some(d) = &mut self.xor {
            if let Err(e) = d.add(chain, page_no, page, hash, previous, &mut self.packs) {
                self.failed = Some(e);
            }
            return;
        }
        let map = self.map.as_mut().expect("a plain chain has a map");
        if !chain.stores(page_no) {
            map.unchanged(page_no);
            return;
        }
        let page = page.expect("a page a chain stores is read");
        match self.packs.add(page, hash) {
            Ok((pack, at)) => map.stored(page_no, pack, at),
            Err(e) => self.failed = Some(e),
        }
    }

    /// Closes the packs, stores the page index and its sidecar, and builds
    /// the page map; caches the page hashes for the next run.
    fn commit(
        self,
        chain: &Chain<'_>,
        hashed: &Hashed,
        stats: &SnapshotStats,
        opts: &RunOpts<'_>,
        label: &str,
    ) -> Result<(PageMap, Stored), SinkError> {
        let a = chain.artifact;
        if let Some(e) = self.failed {
            return Err(e);
        }
        if let Some(d) = self.xor {
            d.finish()?;
        }
        let (new_packs, index) = self.packs.finish()?;
        info!(
            "packs written label={label} sink={} packs={} bytes={}",
            a.sink,
            new_packs.len(),
            new_packs.iter().map(|p| p.size).sum::<u64>()
        );
        let index_sha = Sha256::hex_of(&index);
        chain.sink.put(&chain.index_key, &index)?;
        chain.sink.put(
            &naming::sidecar_key(&chain.index_key),
            Sidecar::new(&index_sha, naming::file_name(&chain.index_key))
                .render()
                .as_bytes(),
        )?;
        let stored_bytes = index.len() as u64 + new_packs.iter().map(|p| p.size).sum::<u64>();
        let (chain_depth, chain_started, mut packs) = match &chain.previous {
            Some(m) => (m.chain_depth + 1, m.chain_started, m.packs.clone()),
            None => (0, stats.taken_at, Vec::new()),
        };
        let (runs, packs) = match (self.map, &chain.previous, &chain.xor) {
            (Some(map), _, _) => {
                packs.extend(new_packs);
                map.finish(packs)
            }
            // An XOR run leaves the runs as they were, drops the packs it
            // folded and adds its own after them.
            (None, Some(m), Some(folded)) => {
                let mut kept: Vec<_> = std::mem::take(&mut packs)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !folded.contains(i))
                    .map(|(_, p)| p)
                    .collect();
                kept.extend(new_packs);
                (m.runs.clone(), kept)
            }
            _ => unreachable!("an XOR chain builds on a previous snapshot"),
        };
        // A sealed chain shows only a tag its host keys (and the sealed
        // facts hold the digest): no unkeyed hash of plaintext on a sink.
        let seal = chain.seal.as_ref();
        let hashes_sha256 = match &opts.page_cache {
            Some(dir) => incremental::recorded_digest(dir, &hashed.hashes_sha256, seal),
            None => seal.is_none().then(|| hashed.hashes_sha256.clone()),
        };
        let base_bytes = match &chain.previous {
            Some(m) => m.base_bytes,
            None => Some(stored_bytes),
        };
        let map = PageMap {
            chain_depth,
            chain_started,
            stored_bytes,
            base_bytes,
            packs,
            hashes_sha256,
            runs,
        };
        // Written before the manifest: a cache is trusted only when its
        // digest matches the newest manifest's, so one for a snapshot that
        // never made it into the catalog is simply not used.
        if let Some(dir) = &opts.page_cache
            && let Err(e) = incremental::cache_hashes(
                dir,
                &a.sink,
                label,
                &hashed.hashes,
                &hashed.hashes_sha256,
                chain
                    .previous
                    .as_ref()
                    .and_then(|m| m.hashes_sha256.as_deref()),
                seal,
            )
        {
            warn!(
                "sink {}: cannot cache page hashes in {}: {e}",
                a.sink,
                dir.display()
            );
        }
        let stored = Stored {
            key: chain.index_key.clone(),
            sidecar_key: naming::sidecar_key(&chain.index_key),
            compression: crate::compress::Format::Zstd,
            size: index.len() as u64,
            sha256: index_sha,
            db_size: stats.page_count * stats.page_size,
            page_size: stats.page_size,
            page_count: stats.page_count,
            facts: SealedFacts::default(),
        };
        Ok((map, stored))
    }
}

impl Deltas {
    /// Store page `page_no`'s delta: its XOR with its previous version when
    /// this chain stores it, XORed with the deltas of the packs it folds.
    /// A page with no delta, or whose deltas cancel out, stores nothing.
    fn add(
        &mut self,
        chain: &Chain<'_>,
        page_no: u64,
        page: Option<&[u8]>,
        hash: &PageHash,
        previous: Option<&[u8]>,
        packs: &mut PackWriter<'_>,
    ) -> Result<(), SinkError> {
        let changed = chain.stores(page_no);
        let folded = self.folded.iter().any(|r| r.peek() == Some(page_no));
        if !changed && !folded {
            return Ok(());
        }
        if changed {
            self.delta
                .copy_from_slice(page.expect("a page a chain stores is read"));
            if page_no < chain.previous_pages {
                let previous = previous.expect("read for the chains that store its delta");
                xor_pack::xor_into(&mut self.delta, previous);
            }
        } else {
            self.delta.fill(0);
        }
        for r in &mut self.folded {
            if r.peek() == Some(page_no) {
                r.read(&mut self.scratch).map_err(fold_error)?;
                xor_pack::xor_into(&mut self.delta, &self.scratch);
            }
        }
        if self.delta.iter().all(|b| *b == 0) {
            return Ok(());
        }
        packs.add_delta(page_no, &self.delta, hash)
    }

    /// Check the folded packs: each read to its end, every byte as stored.
    fn finish(self) -> Result<(), SinkError> {
        for r in self.folded {
            if let Some(page) = r.peek() {
                return Err(fold_error(incremental::PackProblem {
                    key: r.key().to_string(),
                    reason: format!("holds a delta of page {page}, past the image's end"),
                }));
            }
            r.finish().map_err(fold_error)?;
        }
        Ok(())
    }
}

fn fold_error(p: incremental::PackProblem) -> SinkError {
    SinkError::Remote {
        op: "fold",
        key: p.key,
        message: p.reason,
    }
}

/// The phase seal of an incremental run: one classic artifact of the same
/// snapshot for the cold-only sinks.
struct Seal {
    planned: Vec<PlannedArtifact>,
    fan: FanOut,
    sealed: io::Result<(String, u64)>,
}

impl Seal {
    fn finish(
        self,
        db: &Database,
        targets: &[Target],
        opts: &RunOpts<'_>,
        stats: &SnapshotStats,
        hashed: &Hashed,
        started: Instant,
    ) -> (Written, Vec<BackupError>) {
        let mut errors: Vec<BackupError> = self
            .fan
            .failures
            .iter()
            .map(|(i, msg)| sink_error(targets[*i].sink.name(), msg))
            .collect();
        match self.sealed {
            Ok((image_sha256, db_size)) => {
                debug_assert!(
                    hashed.db_sha256.is_empty() || image_sha256 == hashed.db_sha256,
                    "one snapshot, one image"
                );
                let produced = Produced {
                    stats: stats.clone(),
                    db_sha256: image_sha256,
                    db_size,
                    report: hashed.report.clone(),
                };
                let (w, e) = finish_uploads(
                    self.fan,
                    produced,
                    db,
                    &self.planned,
                    targets,
                    opts,
                    started,
                );
                errors.extend(e);
                (w, errors)
            }
            Err(e) => {
                for (i, _) in self.fan.writers.iter().filter(|(_, w)| w.is_some()) {
                    errors.push(sink_error(
                        targets[*i].sink.name(),
                        format!("writing the full image: {e}"),
                    ));
                }
                self.fan.abort();
                (Vec::new(), errors)
            }
        }
    }
}
