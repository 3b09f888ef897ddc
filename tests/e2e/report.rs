//! `report --html`: the page names every database with its health, newest
//! backup and drill, charts its runs, and renders in a real headless
//! Chromium without console errors.
//!
//! `a_simulated_day_…` runs a real day of backups under `faketime` (every
//! command at its own simulated time). It also makes the book's picture:
//! `REPORT_PNG=$PWD/docs/src/report.png cargo test --test e2e simulated_day`.

use std::path::Path;
use std::process::{Command, Output};

use backup_testkit::testkit::{Project, binary, output_text, require_tool};

#[test]
fn the_report_shows_each_database_and_renders_in_chromium() {
    require_tool("chromium");
    let p = Project::new();
    p.demo_db("app.db", 300_000);
    p.demo_db("costs.db", 200_000);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n\
         [[database]]\nlabel = \"costs\"\npath = \"costs.db\"\n\n\
         [[database]]\nlabel = \"never-backed-up\"\npath = \"missing.db\"\n",
    );
    p.run_ok(&["backup", "--tag", "r1"]);
    p.run_ok(&["backup", "--label", "app", "--tag", "r2"]);
    p.run_ok(&["drill", "--label", "app"]);
    let page = p.join("report <&>.html");
    let out = p.run_ok(&["report", "--html", page.to_str().unwrap()]);
    assert!(out.contains("Report written"), "{out}");

    let html = std::fs::read_to_string(&page).unwrap();
    for needle in [
        "app",
        "costs",
        "never-backed-up",
        "app-r2-",
        "passed",
        "RTO",
    ] {
        assert!(html.contains(needle), "{needle} missing from the page");
    }
    assert!(!html.contains("<script"), "the page runs no script");
    assert_eq!(html.matches("<h2>").count(), 3, "a section per database");
    assert_eq!(
        html.matches("<svg").count(),
        10,
        "five charts per backed-up database"
    );
    assert!(html.contains("No runs in the last 7 days."));
    render_in_chromium(&page, &p.join("report.png"), (1200, 900));
}

/// Screenshot `page` in headless Chromium: it must render, draw something
/// and log no console error.
fn render_in_chromium(page: &Path, shot: &Path, (width, height): (u32, u32)) {
    let profile = tempfile::tempdir().unwrap();
    let run = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url::Url::from_file_path(page).unwrap().as_str())
        .output()
        .expect("run chromium");
    let log = output_text(&run);
    assert!(run.status.success(), "{log}");
    let png = std::fs::read(shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{log}");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught")))
        .collect();
    assert!(console_errors.is_empty(), "{console_errors:?}");
}

/// `sqlite-backup ARGS` as if the clock read `when` (UTC) when it started.
fn at(p: &Project, when: &str, args: &[&str]) -> Output {
    Command::new("faketime")
        .args(["-m", "-f", &format!("@{when}")])
        .arg(binary())
        .arg("--config")
        .arg(p.config())
        .args(args)
        .current_dir(p.path())
        .env("TZ", "UTC")
        // Durations and timeouts keep the real monotonic clock.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run faketime")
}

fn at_ok(p: &Project, when: &str, args: &[&str]) {
    let out = at(p, when, args);
    assert!(
        out.status.success(),
        "{when} {args:?}: {}",
        output_text(&out)
    );
}

/// A day of incremental backups every 30 minutes, with a failed run at
/// 09:30, no runs from 13:00 to 16:00 and a drill every six hours: the page
/// names the failure, the gap, the full bases and the drills in words and
/// draws them.
#[test]
fn a_simulated_day_reports_its_failure_its_gap_and_its_chain() {
    require_tool("faketime");
    require_tool("chromium");
    let p = Project::new();
    let db = p.demo_db("app.db", 2_000_000);
    p.write_config(
        "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n\
         [snapshot]\nincremental = true\nfull_every = \"8h\"\n",
    );
    let mut runs = 0;
    for slot in 0..48 {
        let (hour, minute) = (slot / 2, slot % 2 * 30);
        if (13..16).contains(&hour) || (hour, minute) == (16, 0) {
            continue;
        }
        let when = format!("2026-05-05 {hour:02}:{minute:02}:00");
        let app = rusqlite::Connection::open(&db).unwrap();
        app.execute_batch(&format!(
            "INSERT INTO tasks(title, owner, status, priority, created_at) \
             SELECT 'slot {slot}', owner, status, priority, created_at FROM tasks LIMIT {};",
            20 + slot * 3
        ))
        .unwrap();
        drop(app);
        runs += 1;
        if (hour, minute) == (9, 30) {
            // Something that is not a database stands in its place.
            let away = p.join("app.db.away");
            std::fs::rename(&db, &away).unwrap();
            std::fs::write(&db, vec![7u8; 8192]).unwrap();
            assert_eq!(at(&p, &when, &["backup"]).status.code(), Some(1));
            std::fs::rename(&away, &db).unwrap();
        } else {
            at_ok(&p, &when, &["backup"]);
        }
        if minute == 0 && hour % 6 == 5 {
            at_ok(&p, &format!("2026-05-05 {hour:02}:45:00"), &["drill"]);
        }
    }
    assert_eq!(runs, 41);
    let page = p.join("report.html");
    at_ok(
        &p,
        "2026-05-06 00:05:00",
        &["report", "--html", page.to_str().unwrap()],
    );
    let html = std::fs::read_to_string(&page).unwrap();
    for needle in [
        "41 runs from 2026-05-05 00:00 UTC to 2026-05-06 00:05 UTC, 1 failed (latest at 2026-05-05 09:30 UTC)",
        "no run from 2026-05-05 12:30 UTC to 2026-05-05 16:30 UTC (4h",
        "40 runs stored",
        "3 full bases, 37 incremental, 0 self-contained",
        "4 drills, 0 failed",
        "Worst 4h",
        "<title>Run duration</title>",
        "stale after 26 h",
    ] {
        assert!(html.contains(needle), "{needle:?} missing from the page");
    }
    assert_eq!(html.matches("<svg").count(), 5);
    let shot = p.join("report.png");
    render_in_chromium(&page, &shot, (1280, 1980));
    if let Some(out) = std::env::var_os("REPORT_PNG") {
        std::fs::copy(&shot, out).expect("copy the screenshot to REPORT_PNG");
    }
}
