//! Every sink against the one conformance suite
//! (`backup_core::sink::conformance`), as object_store runs its backends
//! through one shared integration suite: the local folder, Azure Blob on a
//! real Azurite and S3 on a real moto, started on 127.0.0.1 by the test
//! kit. A missing server fails these tests with how to install it; they
//! are never skipped. Behaviour only one service has (SAS tokens, open
//! multipart uploads, wrong keys) stays in that sink's crate.

use backup_core::sink::{Placement, conformance};
use backup_local::LocalSink;
use backup_testkit::remote::Remote;

#[test]
fn the_local_folder_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(&LocalSink::new("local", dir.path(), Placement::Local));
    let cold = tempfile::tempdir().unwrap();
    conformance::run(&LocalSink::new("cold", cold.path(), Placement::Cold));
}

#[test]
fn azure_blob_on_azurite_conforms_with_single_and_multipart_uploads() {
    let remote = Remote::azure();
    // 1 MiB parts: the suite's 3 MiB stream goes through multipart upload.
    conformance::run(&remote.sink_with_parts(1));
    // And with the default part size, where it is a single PUT.
    conformance::run(&remote.sink());
}

#[test]
fn s3_on_moto_conforms_with_small_and_large_parts() {
    let remote = Remote::s3();
    // The smallest parts S3 allows, and large ones.
    conformance::run(&remote.sink_with_parts(5));
    conformance::run(&remote.sink_with_parts(64));
    assert!(remote.open_uploads().is_empty());
}
