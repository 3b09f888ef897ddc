//! The rules the config file is held to, met by settings built in code.

use std::time::Duration;

use backup_core::compress::{Compression, CompressionError, Format};
use backup_core::incremental::{Policy, PolicyError};
use backup_core::retention::RetentionError;
use backup_core::{Database, DatabaseError};

#[test]
fn a_database_built_in_code_meets_the_config_rules() {
    let db = Database::new("app", "/srv/app.db");
    assert_eq!(db.validate(), Ok(()));
    let e = Database::new("app", " ").validate().unwrap_err();
    assert_eq!(e.to_string(), "database \"app\" has an empty path");
    let mut db = Database::new("app", "/srv/app.db");
    db.retention.hot_days = 40;
    assert!(matches!(
        db.validate(),
        Err(DatabaseError::Retention {
            source: RetentionError::HotBeyondWarm {
                hot_days: 40,
                warm_days: 30
            },
            ..
        })
    ));
    db.retention.warm_days = 0;
    assert_eq!(db.validate(), Ok(()));
    db.retention.keep_within = Some(Duration::from_secs(3600));
    assert!(matches!(
        db.validate(),
        Err(DatabaseError::Retention {
            source: RetentionError::KeepWithinInsideHot { .. },
            ..
        })
    ));
    let mut db = Database::new("app", "/srv/app.db")
        .encrypt_to(backup_core::encryption::Recipients::passphrase("pw".into()));
    db.incremental = true;
    // Sealed chains: incremental snapshots of an encrypted database.
    assert_eq!(db.validate(), Ok(()));
}

#[test]
fn compression_levels_and_policies_are_checked() {
    let zstd = Compression::new(Format::Zstd);
    assert_eq!(zstd.with_level(19).map(|c| c.level), Ok(19));
    assert_eq!(
        zstd.with_level(20).unwrap_err().to_string(),
        "compression level 20 is out of range for zstd"
    );
    let gzip = Compression::new(Format::Gzip);
    assert!(matches!(
        gzip.with_level(0),
        Err(CompressionError::LevelOutOfRange { level: 0, .. })
    ));
    assert!(Compression::new(Format::None).with_level(42).is_ok());
    let policy = Policy {
        max_chain: 0,
        ..Policy::default()
    };
    assert_eq!(policy.validate(), Err(PolicyError::ZeroMaxChain));
    let policy = Policy {
        full_every: Duration::ZERO,
        ..Policy::default()
    };
    assert_eq!(policy.validate(), Err(PolicyError::ZeroFullEvery));
}

#[test]
fn the_facade_refuses_what_the_config_would() {
    let backups = backup_core::Backups::new(backup_core::sink::MemorySink::new("mem"));
    let mut db = Database::new("app", "/nonexistent/app.db");
    db.retention.hot_days = 40;
    let e = backups.backup(&db).unwrap_err();
    assert!(matches!(e, backup_core::Error::Config(_)), "{e}");
    assert!(e.to_string().contains("hot_days = 40"), "{e}");
}
