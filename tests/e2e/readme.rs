//! The README's config reference is a file users copy whole: it must load
//! as it stands, every key where the reference says it belongs.

use backup_testkit::testkit::Project;

/// The first ```toml block after `heading`.
fn toml_block(readme: &str, heading: &str) -> String {
    let from = readme.find(heading).expect("the heading");
    let rest = &readme[from..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = rest[start..].find("```").expect("its end");
    rest[start..start + end].to_string()
}

#[test]
fn the_config_reference_loads_as_one_file() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let text = toml_block(&readme, "## Config reference");
    let p = Project::new();
    std::fs::write(p.config(), &text).unwrap();
    let config = backup_config::Config::load(&p.config()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.max_age_hours, 26);
    assert_eq!(config.state_dir, p.path().join(".sqlite-backup-state"));
    assert_eq!(config.databases[0].database.label, "mission-control");
}
