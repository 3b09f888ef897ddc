//! Bad input, fuzzed with proptest: config files, sidecars, manifests and
//! object-name templates never panic and always fail with context; labels
//! with `/`, `..`, spaces or upper case are rejected at the line that holds
//! them; a rendered template never escapes its prefix nor lands in the
//! local sink's private names (hidden files, `.partial-` files).
//!
//! 512 cases per property (7 properties: 3 584 inputs); a failing case is shrunk and
//! saved by proptest, and `PROPTEST_CASES=N` runs more.

use std::path::Path;

use backup_config::Config;
use backup_core::digest::Sidecar;
use backup_core::manifest::Manifest;
use backup_core::naming::{NameContext, Template};
use backup_core::sink::validate_key;
use backup_core::validate_label;
use jiff::Timestamp;
use proptest::prelude::*;

/// Cases per property: 512, or `PROPTEST_CASES`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}
const FILE: &str = "/etc/sb/sqlite-backup.toml";

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn valid_label() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}(-[a-z0-9]{1,8}){0,3}"
}

/// Labels that must be refused: a valid label with a bad piece inside.
fn bad_label() -> impl Strategy<Value = String> {
    (
        valid_label(),
        prop::sample::select(vec!["/", "..", " ", "A", "Z", "../", "\\", "_", "", "-"]),
        valid_label(),
        any::<bool>(),
    )
        .prop_map(|(a, bad, b, upper)| {
            if upper {
                // A capital letter somewhere (digits have no upper case).
                format!("{a}M{b}").to_uppercase()
            } else if bad.is_empty() {
                String::new()
            } else if bad == "-" {
                format!("{a}--{b}")
            } else {
                format!("{a}{bad}{b}")
            }
        })
}

fn template_text() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "{label}",
        "{tag}",
        "{date}",
        "{yyyymmdd}",
        "{time}",
        "{run}",
        "{ext}",
        "/",
        "/",
        ".",
        "..",
        "-",
        "a",
        "{",
        "}",
        "{nope}",
        ".partial-",
        "manifests",
        ".sha256",
        " ",
        "\\",
        ".tmp",
        "\n",
    ]);
    prop_oneof![
        3 => prop::collection::vec(piece, 0..10).prop_map(|v| v.concat()),
        1 => ".{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn config_parse_never_panics_on_any_text(text in ".{0,300}") {
        if let Err(e) = Config::parse(&text, Path::new(FILE)) {
            let shown = e.to_string();
            prop_assert!(shown.starts_with(FILE), "no file in {shown:?}");
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn config_parse_never_panics_on_near_valid_configs(
        label in prop_oneof![valid_label(), bad_label(), ".{0,20}"],
        path in ".{0,30}",
        template in template_text(),
        level in -5i64..30,
        format in prop::sample::select(vec!["zstd", "gzip", "none", "lz4", ""]),
    ) {
        let text = format!(
            "[[database]]\nlabel = {}\npath = {}\n\n[compression]\nformat = {}\nlevel = {level}\n\n[local]\nroot = \"backups\"\ntemplate = {}\n",
            toml_string(&label), toml_string(&path), toml_string(format), toml_string(&template)
        );
        match Config::parse(&text, Path::new(FILE)) {
            Ok(c) => {
                prop_assert!(validate_label(&c.databases[0].database.label).is_ok());
            }
            Err(e) => {
                prop_assert!(e.to_string().starts_with(FILE));
                if validate_label(&label).is_err() && e.message.contains("label") {
                    prop_assert_eq!(e.line, Some(2), "label error not at its line: {}", e);
                }
            }
        }
    }

    #[test]
    fn labels_with_separators_dots_spaces_or_capitals_are_refused(label in bad_label()) {
        prop_assert!(validate_label(&label).is_err(), "accepted {label:?}");
        let text = format!("[[database]]\nlabel = {}\npath = \"a.db\"\n", toml_string(&label));
        let e = Config::parse(&text, Path::new(FILE)).unwrap_err();
        prop_assert_eq!(e.line, Some(2));
    }

    #[test]
    fn sidecar_parse_never_panics(text in prop_oneof![
        ".{0,200}",
        ("[0-9a-fA-F]{60,68}", "[ *]{0,3}", ".{0,20}", "\n?").prop_map(|(a, b, c, d)| format!("{a}{b}{c}{d}")),
    ]) {
        match Sidecar::parse(&text) {
            Ok(s) => {
                prop_assert_eq!(s.sha256.len(), 64);
                prop_assert!(s.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                prop_assert!(!s.file_name.is_empty() && !s.file_name.contains('\n'));
                prop_assert_eq!(Sidecar::parse(&s.render()).unwrap(), s);
            }
            Err(e) => prop_assert!(e.to_string().contains("sha256sum")),
        }
    }

    #[test]
    fn manifest_parse_never_panics(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        ("[{}\\[\\]\":,0-9a-z ]{0,200}").prop_map(String::into_bytes),
    ]) {
        if let Err(e) = Manifest::from_bytes("manifests/x.json", &bytes) {
            prop_assert!(e.to_string().contains("manifests/x.json"));
        }
    }

    #[test]
    fn damaged_real_manifests_never_panic(at in any::<prop::sample::Index>(), mask in 1u8..=255, cut in any::<bool>()) {
        let mut bytes = sample_manifest();
        let i = at.index(bytes.len());
        if cut { bytes.truncate(i) } else { bytes[i] ^= mask }
        if let Err(e) = Manifest::from_bytes("manifests/x.json", &bytes) {
            prop_assert!(e.to_string().contains("manifests/x.json"));
        }
    }

    #[test]
    fn templates_never_panic_and_never_escape(
        text in template_text(),
        allow in any::<bool>(),
        label in valid_label(),
        tag in prop::option::of(valid_label()),
        secs in 0i64..4_102_444_800,
        ext in prop::sample::select(vec![".db", ".db.zst", ".db.gz"]),
    ) {
        match Template::parse(&text, allow) {
            Err(e) => {
                prop_assert_eq!(&e.template, &text);
                prop_assert!(e.to_string().starts_with("template "), "no context: {}", e);
            }
            Ok(t) => {
                let run_id = backup_core::manifest::new_run_id(Timestamp::from_second(secs).unwrap());
                let key = t.render(&NameContext {
                    label: &label,
                    tag: tag.as_deref(),
                    time: Timestamp::from_second(secs).unwrap(),
                    run_id: &run_id,
                    ext,
                });
                prop_assert!(validate_key(&key).is_ok(), "{text:?} rendered {key:?}");
                prop_assert!(!key.starts_with('/'));
                prop_assert!(key.split('/').all(|s| s != ".." && s != "." && !s.is_empty()));
                // Never in the local sink's private namespace, where hidden
                // names are skipped by `list` and `.partial-<n>` names are
                // deleted as leftovers by the next run.
                prop_assert!(key.split('/').all(|s| !s.starts_with('.')), "{text:?} rendered hidden {key:?}");
                prop_assert!(!key.contains(".partial-"), "{text:?} rendered {key:?}");
                prop_assert!(!key.starts_with("manifests/") && !key.ends_with(".sha256"));
                // And under a prefix it stays below the prefix.
                let full = format!("sqlite/{key}");
                prop_assert!(validate_key(&full).is_ok() && full.starts_with("sqlite/"));
            }
        }
    }
}

fn sample_manifest() -> Vec<u8> {
    let entry = backup_core::manifest::Entry {
        adopted: None,
        label: "app".into(),
        tag: Some("r75".into()),
        key: "app-r75-20261123-130812.db.zst".into(),
        sidecar_key: "app-r75-20261123-130812.db.zst.sha256".into(),
        compression: backup_core::compress::Format::Zstd,
        size: 123,
        sha256: "a".repeat(64),
        db_size: 4096,
        db_sha256: "b".repeat(64),
        page_size: 4096,
        page_count: 1,
        schema_sha256: "c".repeat(64),
        row_counts: [("tasks".to_string(), 3)].into(),
        snapshot_at: Timestamp::UNIX_EPOCH,
        snapshot_ms: 5,
        verified_with: backup_core::CheckLevel::QuickCheck,
        source: "/srv/app.db".into(),
        host: None,
        source_mode: None,
        encrypted_to: vec![],
        sealed: None,
        pages: None,
    };
    Manifest {
        format: backup_core::manifest::FORMAT.into(),
        version: backup_core::manifest::VERSION,
        run_id: "20261123T130812Z-ab12".into(),
        sink: "local".into(),
        tool_version: "0.1.0".into(),
        started_at: Timestamp::UNIX_EPOCH,
        finished_at: Timestamp::UNIX_EPOCH,
        previous: None,
        previous_run_id: None,
        previous_fields: Default::default(),
        entries: vec![entry],
        pruned: vec![],
        collected: vec![],
        relinked: vec![],
    }
    .to_bytes()
}

#[test]
fn templates_that_would_write_into_private_names_are_refused() {
    for bad in [
        ".{label}-{time}{ext}",
        ".tmp/{label}-{time}{ext}",
        "{date}/.hidden/{label}-{time}{ext}",
        "{label}-{yyyymmdd}.partial-{time}",
    ] {
        assert!(Template::parse(bad, false).is_err(), "accepted {bad:?}");
    }
}
