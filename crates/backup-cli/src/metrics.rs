//! Prometheus metrics, rendered from the state file by
//! `metrics-exporter-prometheus` in the classic text exposition format
//! (0.0.4: gauges and counters, no OpenMetrics-only types, no `# EOF`), the
//! one node_exporter's textfile collector and every Prometheus scrape read.
//!
//! The state file is the single source: each render reads it, so the
//! textfile (rewritten after every run, drill and prune) and the daemon's
//! `/metrics` endpoint agree, and runs made outside the daemon show up in
//! its next scrape. Ages are computed at render time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use backup_config::Config;
use backup_core::fsutil;
use jiff::Timestamp;
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing::{info, warn};

use crate::health::{Health, health};
use crate::state::State;

/// Seconds since the epoch, as Prometheus timestamps are.
fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// Who reads the text. A textfile is read long after it is written, and
/// not rewritten at all once runs stop, so it carries no value that depends
/// on when it was written (an age, or health that turns stale with time):
/// those would freeze exactly when an alert should fire. A scrape of the
/// daemon's endpoint computes them at its own time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// `[metrics] textfile`.
    Textfile,
    /// `GET /metrics`.
    Scrape,
}

/// The metrics of every configured database, as Prometheus text.
pub fn render(config: &Config, state: &State, now: Timestamp, reader: Reader) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let scrape = reader == Reader::Scrape;
    metrics::with_local_recorder(&recorder, || {
        describe();
        let sqlite = backup_core::sqlite::build().version;
        gauge!("sqlite_backup_build_info", "version" => env!("CARGO_PKG_VERSION"), "sqlite" => sqlite)
            .set(1.0);
        for d in &config.databases {
            gauge!("sqlite_backup_max_age_seconds", "database" => d.database.label.clone())
                .set(f64::from(config.max_age_hours) * 3600.0);
            let label = d.database.label.clone();
            let Some(db) = state.databases.get(&label) else {
                // Known but never run: its failure count is known (zero).
                if scrape {
                    gauge!("sqlite_backup_healthy", "database" => label.clone()).set(0.0);
                }
                gauge!("sqlite_backup_consecutive_failures", "database" => label).set(0.0);
                continue;
            };
            let l = || label.clone();
            let h = health(
                db.last_success.as_ref().map(|s| s.at),
                db.consecutive_failures,
                config.max_age_hours,
                now,
            );
            if scrape {
                gauge!("sqlite_backup_healthy", "database" => l()).set(if h == Health::Ok {
                    1.0
                } else {
                    0.0
                });
            }
            gauge!("sqlite_backup_consecutive_failures", "database" => l())
                .set(f64::from(db.consecutive_failures));
            gauge!("sqlite_backup_drill_consecutive_failures", "database" => l())
                .set(f64::from(db.drill.consecutive_failures));
            if let Some(a) = &db.last_attempt {
                gauge!("sqlite_backup_last_attempt_timestamp_seconds", "database" => l())
                    .set(seconds(a.at));
                gauge!("sqlite_backup_last_attempt_success", "database" => l()).set(if a.ok {
                    1.0
                } else {
                    0.0
                });
                gauge!("sqlite_backup_duration_seconds", "database" => l())
                    .set(a.duration_ms as f64 / 1000.0);
                if let Some(size) = a.db_size {
                    gauge!("sqlite_backup_database_bytes", "database" => l()).set(size as f64);
                }
            }
            for (sink, s) in &db.sinks {
                let ls = || [("database", l()), ("sink", sink.clone())];
                if let Some(at) = s.last_success {
                    gauge!("sqlite_backup_last_success_timestamp_seconds", &ls()).set(seconds(at));
                    if scrape {
                        gauge!("sqlite_backup_newest_backup_age_seconds", &ls())
                            .set(now.duration_since(at).as_secs_f64().max(0.0));
                    }
                    gauge!("sqlite_backup_stored_bytes", &ls()).set(s.stored_bytes as f64);
                }
                counter!("sqlite_backup_pruned_artifacts_total", &ls()).absolute(s.pruned_total);
            }
            if let Some(drill) = &db.drill.last {
                for s in &drill.sinks {
                    let ls = || [("database", l()), ("sink", s.sink.clone())];
                    gauge!("sqlite_backup_drill_timestamp_seconds", &ls()).set(seconds(drill.at));
                    gauge!("sqlite_backup_drill_success", &ls()).set(if s.error.is_none() {
                        1.0
                    } else {
                        0.0
                    });
                    if let Some(ms) = s.rto_ms {
                        gauge!("sqlite_backup_drill_rto_seconds", &ls()).set(ms as f64 / 1000.0);
                    }
                }
            }
        }
    });
    in_name_order(&recorder.handle().render())
}

/// The exporter renders families in hash order: sorted by name (and each
/// family's samples by their labels), the text diffs cleanly and reads the
/// same from one write to the next.
fn in_name_order(text: &str) -> String {
    let mut families: Vec<Vec<&str>> = text
        .split("\n\n")
        .map(|block| block.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>())
        .filter(|lines| !lines.is_empty())
        .collect();
    for lines in &mut families {
        let samples = lines
            .iter()
            .position(|l| !l.starts_with('#'))
            .unwrap_or(lines.len());
        lines[samples..].sort_unstable();
    }
    let name = |lines: &Vec<&str>| {
        let first = lines[0];
        match first.strip_prefix("# ") {
            Some(rest) => rest
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string(),
            None => first
                .split(['{', ' '])
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    };
    families.sort_by_cached_key(name);
    families
        .iter()
        .map(|lines| lines.join("\n") + "\n\n")
        .collect()
}

fn describe() {
    let g = |name: &'static str, unit: Unit, help: &'static str| describe_gauge!(name, unit, help);
    g(
        "sqlite_backup_last_success_timestamp_seconds",
        Unit::Seconds,
        "When the newest backup in this sink was taken (Unix time).",
    );
    g(
        "sqlite_backup_newest_backup_age_seconds",
        Unit::Seconds,
        "Age of the newest backup in this sink, at scrape time (the daemon's endpoint only).",
    );
    g(
        "sqlite_backup_max_age_seconds",
        Unit::Seconds,
        "max_age_hours of the config, in seconds: alert when time() - last success exceeds it.",
    );
    g(
        "sqlite_backup_build_info",
        Unit::Count,
        "Always 1; the labels name this tool's version and the linked SQLite's.",
    );
    g(
        "sqlite_backup_stored_bytes",
        Unit::Bytes,
        "Stored (compressed) size of the newest backup in this sink.",
    );
    g(
        "sqlite_backup_last_attempt_timestamp_seconds",
        Unit::Seconds,
        "When the newest backup attempt finished (Unix time).",
    );
    g(
        "sqlite_backup_last_attempt_success",
        Unit::Count,
        "1 when the newest backup attempt succeeded in every sink, else 0.",
    );
    g(
        "sqlite_backup_duration_seconds",
        Unit::Seconds,
        "How long the newest backup attempt took.",
    );
    g(
        "sqlite_backup_database_bytes",
        Unit::Bytes,
        "Size of the live database at the newest backup.",
    );
    g(
        "sqlite_backup_healthy",
        Unit::Count,
        "1 when the database is healthy as `status` says (latest attempt succeeded, newest backup within max_age_hours), else 0; at scrape time (the daemon's endpoint only).",
    );
    g(
        "sqlite_backup_consecutive_failures",
        Unit::Count,
        "Failed backup runs in a row.",
    );
    g(
        "sqlite_backup_drill_consecutive_failures",
        Unit::Count,
        "Failed restore drills in a row.",
    );
    g(
        "sqlite_backup_drill_timestamp_seconds",
        Unit::Seconds,
        "When the newest restore drill finished (Unix time).",
    );
    g(
        "sqlite_backup_drill_success",
        Unit::Count,
        "1 when the newest restore drill of this sink passed, else 0.",
    );
    g(
        "sqlite_backup_drill_rto_seconds",
        Unit::Seconds,
        "Time the newest drill took to restore and check the newest backup of this sink.",
    );
    describe_counter!(
        "sqlite_backup_pruned_artifacts_total",
        Unit::Count,
        "Backups deleted by prune in this sink."
    );
}

/// Rewrite `[metrics] textfile` (when configured) from `state`: temp file
/// in the same folder, fsync, rename, so the collector never reads half a
/// file. Problems are logged, never fatal: the backups are done.
pub fn write_textfile(config: &Config, state: &State) {
    let Some(path) = &config.metrics.textfile else {
        return;
    };
    let text = render(config, state, Timestamp::now(), Reader::Textfile);
    // node_exporter's textfile collector reads the file as its own user: a
    // rewrite keeps the mode and group the operator gave the file (metrics
    // hold no database content), else `[metrics] mode`, else 0644.
    let existing = std::fs::metadata(path).ok();
    let mode = config.metrics.mode.unwrap_or_else(|| {
        existing.as_ref().map_or(0o644, |m| {
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777
        })
    });
    let group = existing.map(|m| std::os::unix::fs::MetadataExt::gid(&m));
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| fsutil::atomic_write_owned(path, text.as_bytes(), mode, group));
    match result {
        Ok(()) => info!(file = %path.display(), "metrics written"),
        Err(e) => warn!("writing the metrics file {}: {e}", path.display()),
    }
}

/// Render from the state file on disk (for the HTTP endpoint).
fn render_current(config: &Config) -> String {
    let (state, problem) = match State::load(&config.state_dir) {
        Ok(s) => (s, None),
        Err(e) => (State::default(), Some(e)),
    };
    if let Some(p) = problem {
        warn!("metrics: {p}");
    }
    render(config, &state, Timestamp::now(), Reader::Scrape)
}

/// Serve `GET /metrics` on `addr` until the runtime stops. `config` is the
/// daemon's current config (it replaces it on reload). Binding happens
/// before this returns, so a taken port is an error at start.
pub async fn serve(addr: SocketAddr, config: Arc<Mutex<Config>>) -> std::io::Result<SocketAddr> {
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response, StatusCode, header};

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!("metrics endpoint listening on http://{bound}/metrics");
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!("metrics endpoint: accept failed: {e}");
                    continue;
                }
            };
            let config = config.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let config = config.clone();
                async move {
                    let response = if req.uri().path() == "/metrics" {
                        let config = config.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        // Reading the state file is blocking file I/O.
                        let text = tokio::task::spawn_blocking(move || render_current(&config))
                            .await
                            .unwrap_or_default();
                        Response::builder()
                            .header(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(text)))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
                    };
                    Ok::<_, Infallible>(response.expect("static response parts are valid"))
                }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("metrics endpoint connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DrillRun, RunResult, SinkDrillRecord};
    use std::path::Path;

    fn config(dir: &Path) -> Config {
        Config::parse(
            "[[database]]\nlabel = \"app\"\npath = \"app.db\"\n[[database]]\nlabel = \"costs\"\npath = \"costs.db\"\n[metrics]\ntextfile = \"prom/sb.prom\"\n",
            &dir.join("sqlite-backup.toml"),
        )
        .unwrap()
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn families_per_database_and_sink_in_classic_text_format() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let mut state = State::default();
        let db = state.database("app");
        db.record(
            &RunResult::success(t(0), "run-1", "local", "app.db.zst", 1000),
            3,
        );
        db.record(&RunResult::failure(t(60), "run-2", "boom"), 3);
        db.record_pruned("local", 2);
        db.record_drill(
            DrillRun {
                at: t(90),
                drill_id: "drill-1".into(),
                sinks: vec![SinkDrillRecord {
                    sink: "local".into(),
                    snapshots: vec!["run-1".into()],
                    rto_ms: Some(1500),
                    error: None,
                }],
            },
            3,
        );
        let text = render(&config, &state, t(100), Reader::Scrape);
        for line in [
            "# TYPE sqlite_backup_last_success_timestamp_seconds gauge",
            "sqlite_backup_last_success_timestamp_seconds{database=\"app\",sink=\"local\"} 1800000000",
            "sqlite_backup_newest_backup_age_seconds{database=\"app\",sink=\"local\"} 100",
            "sqlite_backup_stored_bytes{database=\"app\",sink=\"local\"} 1000",
            "sqlite_backup_last_attempt_timestamp_seconds{database=\"app\"} 1800000060",
            "sqlite_backup_last_attempt_success{database=\"app\"} 0",
            "sqlite_backup_consecutive_failures{database=\"app\"} 1",
            "sqlite_backup_consecutive_failures{database=\"costs\"} 0",
            "sqlite_backup_drill_success{database=\"app\",sink=\"local\"} 1",
            "sqlite_backup_drill_rto_seconds{database=\"app\",sink=\"local\"} 1.5",
            "# TYPE sqlite_backup_pruned_artifacts_total counter",
            "sqlite_backup_pruned_artifacts_total{database=\"app\",sink=\"local\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(
            text.contains("sqlite_backup_healthy{database=\"app\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sqlite_backup_max_age_seconds{database=\"app\"} 93600"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("sqlite_backup_build_info{") && l.ends_with("} 1")),
            "{text}"
        );

        // The textfile: the same timestamps and counters, no value that
        // depends on when it was written.
        let file = render(&config, &state, t(100), Reader::Textfile);
        for frozen in [
            "sqlite_backup_newest_backup_age_seconds",
            "sqlite_backup_healthy",
        ] {
            assert!(!file.contains(frozen), "{frozen} in the textfile:\n{file}");
        }
        assert_eq!(file, render(&config, &state, t(100_000), Reader::Textfile));
        assert!(file.contains(
            "sqlite_backup_last_success_timestamp_seconds{database=\"app\",sink=\"local\"} 1800000000"
        ));

        let families: Vec<&str> = file
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert!(families.is_sorted(), "{families:?}");

        // Classic format only: no OpenMetrics end marker or types.
        assert!(!text.contains("# EOF"), "{text}");
        for l in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let kind = l.rsplit(' ').next().unwrap();
            assert!(matches!(kind, "gauge" | "counter"), "{l}");
        }
    }

    #[test]
    fn textfile_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        write_textfile(&config, &State::default());
        let path = config.metrics.textfile.as_ref().unwrap();
        assert!(path.exists());
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("sqlite_backup_consecutive_failures{database=\"costs\"} 0"));
        // Only the file itself: no temp file left beside it.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
