//! A restore reads the packs of a deep chain several at a time: the read of
//! one pack waits until another pack's read has started (an event, with a
//! generous timeout only so a sequential reader fails instead of hanging).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use backup_core::Backups;
use backup_core::sink::MemorySink;
use backup_core::sink::faults::{Hooked, Op};
use backup_testkit::testkit::incremental_app;

#[derive(Default)]
struct Meeting {
    /// Pack reads started and not yet met by another.
    waiting: Mutex<(usize, bool)>,
    met: Condvar,
}

impl Meeting {
    /// A pack read starts: wait until another one starts too (true), or
    /// give up after a while (false).
    fn arrive(&self) -> bool {
        let mut state = self.waiting.lock().unwrap();
        if state.0 > 0 {
            state.1 = true;
            self.met.notify_all();
            return true;
        }
        state.0 += 1;
        let (mut state, _) = self
            .met
            .wait_timeout_while(state, Duration::from_secs(20), |s| !s.1)
            .unwrap();
        state.0 -= 1;
        state.1
    }
}

#[test]
fn a_restore_reads_several_packs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = incremental_app(dir.path());

    let watching = Arc::new(AtomicBool::new(false));
    let meeting = Arc::new(Meeting::default());
    let met = Arc::new(AtomicBool::new(false));
    let sink = {
        let (watching, meeting, met) = (watching.clone(), meeting.clone(), met.clone());
        Hooked::new(MemorySink::new("local")).with_hook(move |op, key, _| {
            if op == Op::Get && key.ends_with(".pack") && watching.load(Ordering::SeqCst) {
                met.fetch_or(meeting.arrive(), Ordering::SeqCst);
            }
            Ok(())
        })
    };
    let backups = Backups::builder()
        .sink(sink)
        .scratch_dir(dir.path().join("scratch"))
        .build();
    // A chain of four snapshots: the newest needs every one's pack.
    for round in 0..4 {
        app.execute("UPDATE t SET v = 'b' || v WHERE id = ?1", [round * 500 + 1])
            .unwrap();
        backups.backup(&db).unwrap();
    }
    watching.store(true, Ordering::SeqCst);
    let verified = backups.verify_latest(&db).unwrap();
    assert!(verified.report.ok(), "{verified:?}");
    assert!(verified.listed.entry.pages.as_ref().unwrap().packs.len() >= 2);
    assert!(
        met.load(Ordering::SeqCst),
        "packs were read one after another"
    );
}
