//! The Azure sink against a real Azurite (no mocked HTTP): what only Azure
//! has. The shared conformance suite runs in the workspace's
//! `tests/sink_conformance.rs`.
//!
//! Needs the pinned Azurite: run `npm ci` at the repo root first. A missing
//! Azurite fails these tests with that instruction; they are never skipped.

use std::time::Instant;

use backup_azure::AzureSink;
use backup_core::sink::{Sink, conformance, get_bytes};
use backup_testkit::azurite::Azurite;
use backup_testkit::remote::{
    MIB, ROOT, Remote, assert_pattern, errors_of_every_request, time_round_trip, upload,
    upload_cut_off,
};
use secrecy::SecretString;

#[test]
fn multipart_upload_round_trips_with_bounded_buffers() {
    let remote = Remote::azure();
    let sink = remote.sink_with_parts(1);
    let len = 24 * MIB + 123; // 25 parts
    let key = "sqlite/2026-01-01/big-120000.db.zst";
    let started = Instant::now();
    let n = upload(&sink, key, len).expect("upload");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(n, len as u64);
    assert_eq!(sink.size(key).unwrap(), Some(len as u64));
    assert_pattern(&sink, key, len);
    eprintln!(
        "{len} bytes in {secs:.2}s; part buffers peaked at {} bytes (bound {})",
        sink.buffer_peak(),
        sink.max_upload_buffer()
    );
    // Bounded by design: never more than PARTS_IN_MEMORY part buffers.
    assert!(sink.buffer_peak() >= sink.part_size());
    assert!(sink.buffer_peak() <= sink.max_upload_buffer());
    assert_eq!(
        sink.max_upload_buffer(),
        backup_azure::PARTS_IN_MEMORY * MIB
    );

    // Tiny and empty streamed objects (single PUT path) work too.
    for len in [0, 10] {
        let key = format!("small/{len}.bin");
        assert_eq!(upload(&sink, &key, len).unwrap(), len as u64);
        assert_pattern(&sink, &key, len);
    }
    assert_eq!(
        sink.list("").unwrap(),
        vec![
            "small/0.bin",
            "small/10.bin",
            "sqlite/2026-01-01/big-120000.db.zst"
        ]
    );
}

#[test]
fn wrong_access_key_is_a_clear_error_without_the_key() {
    let remote = Remote::azure();
    // Valid base64 (64 bytes), but not the emulator's key.
    let wrong =
        "V3JvbmdXcm9uZ1dyb25nV3JvbmdXcm9uZ1dyb25nV3JvbmdXcm9uZ1dyb25nV3JvbmdXcm9uZ1dyb25nV3Jvbmc=";
    let mut cfg = remote.azurite().sink_config(ROOT);
    cfg.access_key = Some(SecretString::from(wrong));
    cfg.max_retries = 0;
    let sink = AzureSink::from_config(&cfg).unwrap();
    assert!(!format!("{sink:?}").contains("V3Jvbmc"));

    for m in &errors_of_every_request(&sink, 9 * MIB) {
        eprintln!("{m}");
        assert!(m.contains("authentication failed"), "unclear: {m}");
        assert!(!m.contains(wrong), "key leaked: {m}");
        assert!(!m.contains("V3Jvbmc"), "key leaked: {m}");
        assert!(
            !m.contains("SharedKey devstoreaccount1:"),
            "signature leaked: {m}"
        );
    }
}

#[test]
fn sas_token_authorizes_every_operation_and_is_never_shown() {
    let remote = Remote::azure();
    let azurite = remote.azurite();
    let sas = Azurite::container_sas(ROOT, "racwdl", "2099-01-01T00:00:00Z");
    let mut cfg = azurite.sink_config(ROOT);
    cfg.sas_token = Some(SecretString::from(sas.clone()));
    let sink = AzureSink::from_config(&cfg).unwrap();
    // Multipart too: 1 MiB parts.
    let mut small_parts = cfg.clone();
    small_parts.part_size_mib = 1;
    conformance::run(&AzureSink::from_config(&small_parts).unwrap());
    conformance::run(&sink);
    let sig = sas.rsplit("sig=").next().unwrap();
    assert!(!format!("{sink:?}").contains(sig));

    // A token without write permission: uploads are refused, clearly, and
    // neither the token nor its signature appears in the message.
    let read_only = Azurite::container_sas(ROOT, "rl", "2099-01-01T00:00:00Z");
    let mut cfg = azurite.sink_config(ROOT);
    cfg.sas_token = Some(SecretString::from(read_only.clone()));
    cfg.max_retries = 0;
    let sink = AzureSink::from_config(&cfg).unwrap();
    assert!(sink.list("").is_ok(), "listing is allowed by `rl`");
    let err = sink.put("a/b.json", b"{}").unwrap_err().to_string();
    let read_only_sig = read_only.rsplit("sig=").next().unwrap();
    assert!(err.contains("authentication failed"), "unclear: {err}");
    assert!(!err.contains(read_only_sig), "signature leaked: {err}");
    assert!(!err.contains(&read_only), "token leaked: {err}");

    // An expired token fails the same way.
    let expired = Azurite::container_sas(ROOT, "racwdl", "2001-01-01T00:00:00Z");
    let mut cfg = azurite.sink_config(ROOT);
    cfg.sas_token = Some(SecretString::from(expired.clone()));
    cfg.max_retries = 0;
    let err = AzureSink::from_config(&cfg)
        .unwrap()
        .put("a/b.json", b"{}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("authentication failed"), "unclear: {err}");
}

#[test]
fn azurite_killed_mid_upload_leaves_nothing_and_recovers() {
    let mut remote = Remote::azure();
    let sink = remote.sink_with_parts(1);
    let key = "sqlite/2026-01-01/app-120000.db.zst";
    // A few parts reach the server, then it dies.
    upload_cut_off(&sink, key, 4 * MIB, || remote.stop(), 32 * MIB);

    remote.restart();
    assert_eq!(sink.size(key).unwrap(), None, "half upload visible");
    assert!(
        sink.list("sqlite").unwrap().is_empty(),
        "half upload listed"
    );

    // The same sink recovers once the server is back.
    let len = 5 * MIB + 1;
    assert_eq!(upload(&sink, key, len).unwrap(), len as u64);
    assert_pattern(&sink, key, len);
    assert_eq!(sink.list("sqlite").unwrap(), vec![key]);
}

/// Throughput and memory of a ~200 MB upload with the default 8 MiB parts.
/// Run alone: `cargo test --test azure_sink -- --ignored --nocapture measure`.
#[test]
#[ignore = "measurement: ~200 MB through Azurite"]
fn measure_200mb_upload() {
    let remote = Remote::azure();
    let sink = remote.sink();
    let len = 191 * MIB; // 200.3 MB
    let hwm_before = vm_hwm_kib();
    let (up, down) = time_round_trip(&sink, "big.db.zst", 191);
    let hwm_after = vm_hwm_kib();
    eprintln!(
        "{:.1} MB: upload {:.1} MB/s ({up:.1}s), download+compare {:.1} MB/s ({down:.1}s); \
         part buffers peak {} MiB (bound {} MiB); VmHWM {} -> {} MiB",
        len as f64 / 1e6,
        len as f64 / up / 1e6,
        len as f64 / down / 1e6,
        sink.buffer_peak() / MIB,
        sink.max_upload_buffer() / MIB,
        hwm_before / 1024,
        hwm_after / 1024,
    );
    assert!(
        (hwm_after - hwm_before) / 1024 < 100,
        "peak RSS grew by more than 100 MiB for a 200 MB upload"
    );
}

fn vm_hwm_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn small_objects_round_trip() {
    let remote = Remote::azure();
    let sink = remote.sink_with_parts(1);
    sink.put("manifests/1.json", b"{\"a\":1}").unwrap();
    assert_eq!(get_bytes(&sink, "manifests/1.json").unwrap(), b"{\"a\":1}");
    assert!(sink.get("manifests/2.json").err().unwrap().is_not_found());
}
