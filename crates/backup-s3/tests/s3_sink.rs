//! The S3 sink against a real moto server (no mocked HTTP), with
//! authentication on and the README's least-privilege policy: what only S3
//! has. The shared conformance suite runs in the workspace's
//! `tests/sink_conformance.rs`.
//!
//! Needs moto in `<repo>/.venv-moto` (scripts/test.sh installs it). A
//! missing moto fails these tests with that instruction; they are never
//! skipped.

use std::io::Write;
use std::time::Instant;

use backup_core::sink::{Sink, get_bytes};
use backup_s3::S3Sink;
use backup_testkit::remote::{
    MIB, ROOT, Remote, assert_pattern, errors_of_every_request, time_round_trip, upload,
    upload_cut_off, wait_for_open_upload,
};
use secrecy::SecretString;

#[test]
fn multipart_upload_round_trips_with_bounded_buffers_and_boto3_agrees() {
    let remote = Remote::s3();
    let sink = remote.sink_with_parts(5);
    let len = 12 * MIB + 77; // parts of 5 + 5 + 2 MiB
    let key = "2026-01-01/big-120000.db.zst";
    let started = Instant::now();
    assert_eq!(upload(&sink, key, len).unwrap(), len as u64);
    eprintln!("{len} bytes in {:.2}s", started.elapsed().as_secs_f64());
    assert_pattern(&sink, key, len);
    assert!(sink.buffer_peak() >= sink.part_size());
    assert!(sink.buffer_peak() <= sink.max_upload_buffer());
    // Another client sees one complete object of that size below the prefix.
    let size = remote
        .moto()
        .boto3(
            "print(s3.head_object(Bucket=sys.argv[1], Key=sys.argv[2])['ContentLength'])",
            &[ROOT, &format!("sqlite/{key}")],
        )
        .unwrap();
    assert_eq!(size.trim(), len.to_string());
    assert!(remote.open_uploads().is_empty());
}

#[test]
fn wrong_secret_is_a_clear_error_without_the_secret() {
    let remote = Remote::s3();
    let moto = remote.moto();
    let wrong = "WrongSecretWrongSecretWrongSecretWrong12";
    let mut cfg = moto.sink_config(ROOT);
    cfg.secret_access_key = Some(SecretString::from(wrong));
    cfg.max_retries = 0;
    let sink = S3Sink::from_config(&cfg).unwrap();
    assert!(!format!("{sink:?}").contains("WrongSecret"));

    let mut messages = errors_of_every_request(&sink, 11 * MIB);
    messages.push(sink.clean_incomplete().unwrap_err().to_string());
    for m in &messages {
        eprintln!("{m}");
        assert!(m.contains("authentication failed"), "unclear: {m}");
        assert!(!m.contains("WrongSecret"), "secret leaked: {m}");
        assert!(!m.contains(moto.secret_access_key()), "secret leaked: {m}");
    }
    // An unknown access key id is refused in the same words.
    let mut cfg = moto.sink_config(ROOT);
    cfg.access_key_id = Some("AKIANOSUCHKEY0000000".into());
    cfg.max_retries = 0;
    let err = S3Sink::from_config(&cfg)
        .unwrap()
        .put("a", b"x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("authentication failed"), "unclear: {err}");
}

#[test]
fn server_gone_mid_upload_leaves_nothing_listed_and_no_open_upload() {
    let mut remote = Remote::s3();
    let sink = remote.sink_with_parts(5);
    let key = "2026-01-01/app-120000.db.zst";
    // Two parts reach the server (the upload is open there), then it goes.
    let cut = || {
        wait_for_open_upload(&sink);
        remote.stop();
    };
    upload_cut_off(&sink, key, 11 * MIB, cut, 40 * MIB);

    // The writer could not abort (no server): the upload is still open.
    let open = remote.open_uploads();
    assert_eq!(
        open,
        vec![format!("sqlite/{key}")],
        "boto3 sees the open upload"
    );

    remote.restart();
    assert_eq!(sink.size(key).unwrap(), None, "half upload visible");
    assert!(sink.list("").unwrap().is_empty(), "half upload listed");
    // The next run's cleanup aborts it (at once here; by default only
    // after 24 h, which moto cannot show: it reports every upload as
    // initiated in 2010, see the janitor's unit test for the age rule).
    let mut cfg = remote.moto().sink_config(ROOT);
    cfg.part_size_mib = 5;
    cfg.abort_incomplete_after_hours = 0;
    let eager = S3Sink::from_config(&cfg).unwrap();
    assert_eq!(eager.clean_incomplete().unwrap(), 1);
    assert!(remote.open_uploads().is_empty(), "upload left open");

    // The same sink recovers once the server is back.
    let len = 6 * MIB + 1;
    assert_eq!(upload(&sink, key, len).unwrap(), len as u64);
    assert_pattern(&sink, key, len);
    assert_eq!(sink.list("").unwrap(), vec![key]);
}

#[test]
fn an_aborted_writer_aborts_the_upload_on_the_server() {
    let remote = Remote::s3();
    let sink = remote.sink_with_parts(5);
    let mut w = sink.create("x/a.db").unwrap();
    w.write_all(&vec![1u8; 6 * MIB]).unwrap();
    wait_for_open_upload(&sink);
    w.abort();
    assert!(remote.open_uploads().is_empty());
    assert!(get_bytes(&sink, "x/a.db").unwrap_err().is_not_found());
}

/// Throughput of a ~200 MB upload with the default 8 MiB parts, to compare
/// with `azure_sink::measure_200mb_upload`. Run alone:
/// `cargo test -p backup-s3 --test s3_sink -- --ignored --nocapture measure`.
#[test]
#[ignore = "measurement: ~200 MB through moto"]
fn measure_200mb_upload() {
    let remote = Remote::s3();
    let sink = remote.sink();
    let len = 191 * MIB;
    let (up, down) = time_round_trip(&sink, "big.db.zst", 191);
    eprintln!(
        "{:.1} MB: upload {:.1} MB/s ({up:.1}s), download+compare {:.1} MB/s ({down:.1}s); part buffers peak {} MiB",
        len as f64 / 1e6,
        len as f64 / up / 1e6,
        len as f64 / down / 1e6,
        sink.buffer_peak() / MIB
    );
}
