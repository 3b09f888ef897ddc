//! The book's config reference (docs/src/config.md) is a file users copy
//! whole: it must load as it stands, every key where the reference says it
//! belongs.

use backup_testkit::testkit::Project;

/// The first ```toml block after `heading`.
fn toml_block(page: &str, heading: &str) -> String {
    let from = page.find(heading).expect("the heading");
    let rest = &page[from..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = rest[start..].find("```").expect("its end");
    rest[start..start + end].to_string()
}

#[test]
fn the_config_reference_loads_as_one_file() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src/config.md"))
        .unwrap();
    let text = toml_block(&page, "# Config reference");
    let p = Project::new();
    std::fs::write(p.config(), &text).unwrap();
    let config = backup_config::Config::load(&p.config()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.max_age_hours, 26);
    assert_eq!(config.state_dir, p.path().join(".sqlite-backup-state"));
    assert_eq!(config.databases[0].database.label, "mission-control");
}
