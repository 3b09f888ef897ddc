//! `report --html`: the page names every database with its health, newest
//! backup and drill, and renders in a real headless Chromium without
//! console errors.

use std::process::Command;

use backup_testkit::testkit::{Project, output_text, require_tool};

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
    assert_eq!(
        html.matches("<h2>").count(),
        2,
        "a history per backed-up database"
    );

    let profile = tempfile::tempdir().unwrap();
    let shot = p.join("report.png");
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
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url::Url::from_file_path(&page).unwrap().as_str())
        .output()
        .expect("run chromium");
    let log = output_text(&run);
    assert!(run.status.success(), "{log}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{log}");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught")))
        .collect();
    assert!(console_errors.is_empty(), "{console_errors:?}");
}
