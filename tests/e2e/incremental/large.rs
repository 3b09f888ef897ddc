//! A database past 1 GiB: SQLite never writes the lock-byte page (the page
//! holding offset 2^30), so it reads as zeros; an incremental chain across
//! it must still restore byte for byte.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use backup_core::digest::HashingReader;
use backup_core::manifest::Listed;
use backup_testkit::testkit::{Project, output_text, require_tool, sh};

use super::{newest, restore_id, stored};

const CONFIG: &str = "[[database]]\nlabel = \"app\"\npath = \"big.db\"\nrequired_tables = [\"blobs\"]\n\n[snapshot]\nincremental = true\n";
const PAGE: u64 = 65536;
const LOCK_BYTE: u64 = 1 << 30;
/// 0-based index of the lock-byte page.
const LOCK_PAGE: u64 = LOCK_BYTE / PAGE;

fn file_sha256(path: &Path) -> String {
    let mut r = HashingReader::new(std::fs::File::open(path).unwrap());
    std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    r.finish().0
}

/// Image pages the snapshot stored itself (in packs no earlier one has).
/// The pages of `l`'s own packs: XOR deltas name theirs.
fn pages_stored(p: &Project, l: &Listed, before: &Listed) -> Vec<u64> {
    let map = l.entry.pages.as_ref().unwrap();
    let old = &before.entry.pages.as_ref().unwrap().packs;
    let mut pages = Vec::new();
    for pack in map.packs.iter().filter(|pk| pk.xor && !old.contains(pk)) {
        let file = std::fs::File::open(p.backups().join(&pack.key)).unwrap();
        let dec = zstd::stream::read::Decoder::new(file).unwrap();
        pages.extend(backup_core::xor_pack::page_numbers(dec, pack.pages).unwrap());
    }
    pages
}

#[test]
fn lock_byte_page_over_one_gibibyte() {
    require_tool("sqlite3");
    let started = Instant::now();
    let p = Project::new();
    let db = p.join("big.db");
    // 1100 rows of 1 MiB on 64 KiB pages: 1.1 GiB in about 18,000 pages,
    // written without a journal (fast), then switched to WAL. One row in 16
    // is random, so packs hold real data, not only zeros.
    sh(
        p.path(),
        "sqlite3 big.db 'PRAGMA page_size = 65536; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         CREATE TABLE blobs(id INTEGER PRIMARY KEY, body BLOB NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1100)
         INSERT INTO blobs SELECT i, CASE WHEN i % 16 = 0 THEN randomblob(1048576) ELSE zeroblob(1048576) END FROM n;
         PRAGMA journal_mode = WAL;'",
    );
    let created = started.elapsed();
    p.write_config(CONFIG);
    p.run_ok(&["backup"]);
    let first = newest(&p);
    assert_eq!(first.entry.page_size, PAGE);
    assert!(
        first.entry.page_count > LOCK_PAGE + 1000,
        "{} pages do not reach far past 1 GiB",
        first.entry.page_count
    );
    // Nothing writes: the file itself is the image, lock-byte page included.
    assert_eq!(file_sha256(&db), first.entry.db_sha256);
    let base_done = started.elapsed();

    // Rows on both sides of the boundary, rewritten in place (same size).
    sh(
        p.path(),
        "sqlite3 big.db 'UPDATE blobs SET body = randomblob(1048576) WHERE id IN (5, 1005, 1015, 1025, 1035, 1095);'",
    );
    p.run_ok(&["backup"]);
    let second = newest(&p);
    assert_eq!(second.entry.pages.as_ref().unwrap().chain_depth, 1);
    let changed = pages_stored(&p, &second, &first);
    assert!(
        changed.iter().any(|&n| n < LOCK_PAGE) && changed.iter().any(|&n| n > LOCK_PAGE),
        "the second run stored no pages on one side of the lock-byte page: {changed:?}"
    );
    assert!(!changed.contains(&LOCK_PAGE), "the lock-byte page changed");
    assert!(
        stored(&second) * 4 < stored(&first),
        "incremental stored {} bytes, base {}",
        stored(&second),
        stored(&first)
    );
    sh(
        p.path(),
        "sqlite3 big.db 'PRAGMA wal_checkpoint(TRUNCATE);'",
    );
    assert_eq!(file_sha256(&db), second.entry.db_sha256);
    let incr_done = started.elapsed();

    for l in [&first, &second] {
        let to = p.join("restored.db");
        let out = restore_id(&p, &l.run_id, &to);
        assert!(out.status.success(), "{}", output_text(&out));
        assert_eq!(file_sha256(&to), l.entry.db_sha256, "{}", l.run_id);
        let mut lock_page = vec![1u8; PAGE as usize];
        std::fs::File::open(&to)
            .unwrap()
            .read_exact_at(&mut lock_page, LOCK_BYTE)
            .unwrap();
        assert!(
            lock_page.iter().all(|b| *b == 0),
            "lock-byte page not zeros"
        );
        assert_eq!(
            sh(p.path(), "sqlite3 restored.db 'PRAGMA integrity_check;'").trim(),
            "ok"
        );
        for f in ["restored.db", "restored.db-wal", "restored.db-shm"] {
            let _ = std::fs::remove_file(p.join(f));
        }
    }
    eprintln!(
        "1.1 GiB: created in {:.1?}, base backup at {:.1?}, second backup at {:.1?}, two restores done at {:.1?}; stored {} then {} bytes",
        created,
        base_done,
        incr_done,
        started.elapsed(),
        stored(&first),
        stored(&second)
    );
}
