//! insta snapshots of what users read: `--help`, config errors, the dry-run plan.

use backup_testkit::testkit::{Project, output_text};

fn redact(text: &str, p: &Project) -> String {
    text.replace(&p.path().display().to_string(), "[PROJECT]")
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"\d{8}T\d{6}Z-[0-9a-f]{4}", "[RUN-ID]");
    s.add_filter(r"\d{8}-\d{6}", "[YYYYMMDD-HHMMSS]");
    s.add_filter(r"sqlite-backup \d+\.\d+\.\d+", "sqlite-backup [VERSION]");
    s
}

#[test]
fn help_texts() {
    let p = Project::new();
    let _g = settings().bind_to_scope();
    for cmd in [
        vec!["--help"],
        vec!["backup", "--help"],
        vec!["verify", "--help"],
        vec!["restore", "--help"],
    ] {
        let out = p.run(&cmd);
        assert_eq!(out.status.code(), Some(0));
        insta::assert_snapshot!(
            format!("help_{}", if cmd[0] == "--help" { "main" } else { cmd[0] }),
            redact(&output_text(&out), &p)
        );
    }
}

#[test]
fn config_errors() {
    let p = Project::new();
    let _g = settings().bind_to_scope();
    let cases = [
        (
            "bad_label",
            "[[database]]\nlabel = \"Mission Control\"\npath = \"a.db\"\n",
        ),
        (
            "unknown_key",
            "[[database]]\nlabel = \"a\"\npath = \"a.db\"\nrequired_table = [\"t\"]\n",
        ),
        ("bad_value", "[compression]\nformat = \"brotli\"\n"),
        (
            "bad_level",
            "[compression]\nformat = \"zstd\"\nlevel = 42\n",
        ),
        (
            "overwriting_template",
            "[azure]\ncontainer = \"c\"\ntemplate = \"{date}/{label}.db.gz\"\n",
        ),
    ];
    for (name, text) in cases {
        p.write_config(text);
        let out = p.run(&["list"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        insta::assert_snapshot!(format!("config_{name}"), redact(&output_text(&out), &p));
    }
}

#[test]
fn dry_run_plan() {
    let p = Project::new();
    let _g = settings().bind_to_scope();
    p.demo_db("app.db", 200_000);
    p.write_config("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n\n[[database]]\nlabel = \"gone\"\npath = \"gone.db\"\n\n[local]\ncold = \"offsite\"\n");
    let out = p.run(&["backup", "--dry-run", "--tag", "phase1", "--tier", "cold"]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(
        "dry_run_plan",
        redact(&String::from_utf8_lossy(&out.stdout), &p)
    );
}

/// Log lines are colored on a terminal, never with NO_COLOR or `--color
/// never`, and into a pipe only with `--color always`.
#[test]
fn no_color_and_color_choose_whether_log_lines_are_colored() {
    let p = Project::new();
    p.demo_db("app.db", 100_000);
    p.write_config("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n");
    let bin = backup_testkit::testkit::binary();
    let config = p.config();
    // `script` gives the command a terminal, as an operator's shell does.
    let on_terminal = |no_color: Option<&str>, flag: &str| {
        let line = format!(
            "{} --config '{}' {flag} backup",
            bin.display(),
            config.display()
        );
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &line, "/dev/null"]).env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).contains("\x1b[")
    };
    assert!(on_terminal(None, ""), "a terminal gets colors");
    assert!(on_terminal(Some(""), ""), "an empty NO_COLOR is unset");
    assert!(!on_terminal(Some("1"), ""), "NO_COLOR=1 on a terminal");
    assert!(!on_terminal(None, "--color never"));
    assert!(on_terminal(Some("1"), "--color always"));

    let piped = |flag: &[&str]| {
        let out = p.run(&[flag, &["backup"]].concat());
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).contains("\x1b[")
    };
    assert!(!piped(&[]), "a pipe gets no colors");
    assert!(piped(&["--color", "always"]));
}

/// A file that is not there is a usage error (exit 2) for every command
/// that takes one, with the path named.
#[test]
fn a_missing_input_file_is_a_usage_error_everywhere() {
    let p = Project::new();
    for args in [&["verify", "missing.db.zst"][..], &["check", "missing.db"]] {
        let out = p.run(args);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains(&format!("{} is not a file", args[1])),
            "{text}"
        );
    }
}

/// `completions bash` completes commands and each command's own options in
/// a real bash; `man DIR` writes a page per command that `man` renders.
#[test]
fn completions_and_man_pages_work_in_the_real_tools() {
    let p = Project::new();
    let script = p.join("sqlite-backup.bash");
    std::fs::write(&script, p.run_ok(&["completions", "bash"])).unwrap();
    let complete = |words: &str| {
        let line = format!(
            "source '{}'; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _sqlite_backup sqlite-backup \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             complete -p sqlite-backup >&2; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("sqlite-backup re"), "restore report");
    assert_eq!(complete("sqlite-backup restore --f"), "--from --force");
    // No zsh or fish here to run them in: they name the commands and options.
    let zsh = p.run_ok(&["completions", "zsh"]);
    assert!(
        zsh.contains("#compdef sqlite-backup") && zsh.contains("'--from=[Only consider this sink")
    );
    let fish = p.run_ok(&["completions", "fish"]);
    assert!(fish.contains("__fish_sqlite_backup_using_subcommand restore\" -l from"));

    let dir = p.join("man pages ü");
    p.run_ok(&["man", dir.to_str().unwrap()]);
    for cmd in [
        "backup",
        "list",
        "verify",
        "check",
        "restore",
        "prune",
        "status",
        "drill",
        "report",
        "daemon",
        "schedule",
        "catalog",
        "demo",
        "completions",
        "man",
    ] {
        assert!(
            dir.join(format!("sqlite-backup-{cmd}.1")).is_file(),
            "{cmd}"
        );
    }
    let out = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.join("sqlite-backup-restore.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "200")
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(page.contains("never destroying the live file"), "{page}");
    assert!(page.contains("--dry-run"), "{page}");
}

/// `backup --json` and `backup --dry-run --json`: one object a script can
/// read, whose keys and digests are the files' own.
#[test]
fn backup_json_describes_the_run_and_the_plan() {
    let p = Project::new();
    p.demo_db("app.db", 200_000);
    p.write_config("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n");
    let mut s = settings();
    s.add_filter(r"[0-9a-f]{64}", "[SHA256]");
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]");
    s.add_filter(r#""size": \d+"#, r#""size": [BYTES]"#);
    let _g = s.bind_to_scope();
    let stdout = |args: &[&str]| {
        let out = p.run(args);
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8(out.stdout).unwrap()
    };

    let plan = stdout(&["backup", "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(v["databases"][0]["action"], "backup");
    assert!(p.catalog().is_empty(), "a dry run wrote something");
    insta::assert_snapshot!("backup_dry_run_json", redact(&plan, &p));

    let run = stdout(&["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run).unwrap();
    assert_eq!((v["ok"].as_u64(), v["failed"].as_u64()), (Some(1), Some(0)));
    let copy = &v["databases"][0]["copies"][0];
    let file = p.backups().join(copy["key"].as_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(copy["size"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(
        copy["sha256"].as_str().unwrap(),
        backup_core::digest::Sha256::hex_of(&bytes)
    );
    assert_eq!(v["run_id"], p.catalog()[0].run_id.as_str());
    insta::assert_snapshot!("backup_json", redact(&run, &p));
}

/// `drill --json`, `check --json` and `catalog head --json`: one object
/// each, whose facts are the files' own, and a corrupt database is `ok:
/// false` with exit 1.
#[test]
fn drill_check_and_catalog_head_speak_json() {
    let p = Project::new();
    let db = p.demo_db("app.db", 300_000);
    p.write_config("[[database]]\nlabel = \"app\"\npath = \"app.db\"\n");
    p.run_ok(&["backup"]);
    p.run_ok(&["backup"]);
    let json = |args: &[&str]| {
        let out = p.run(args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", output_text(&out)));
        (out.status.code(), v)
    };

    let (code, drill) = json(&["drill", "--json"]);
    assert_eq!((code, &drill["ok"]), (Some(0), &serde_json::json!(true)));
    let drilled = &drill["databases"][0]["sinks"][0]["snapshots"];
    let listed: Vec<String> = p.catalog().iter().map(|l| l.run_id.clone()).collect();
    assert!(!drilled.as_array().unwrap().is_empty());
    for d in drilled.as_array().unwrap() {
        assert!(
            listed.contains(&d["run_id"].as_str().unwrap().to_string()),
            "{d}"
        );
        assert!(d["error"].is_null(), "{d}");
    }

    let (code, check) = json(&["check", db.to_str().unwrap(), "--json"]);
    assert_eq!((code, &check["ok"]), (Some(0), &serde_json::json!(true)));
    assert_eq!(check["label"], "app");
    let pages = std::fs::metadata(&db).unwrap().len() / check["page_size"].as_u64().unwrap();
    assert_eq!(check["page_count"].as_u64(), Some(pages));

    let (_, heads) = json(&["catalog", "head", "--json"]);
    let newest = p.catalog().into_iter().map(|l| l.run_id).max().unwrap();
    let manifest = std::fs::read(p.backups().join(format!("manifests/{newest}.json"))).unwrap();
    assert_eq!(heads["heads"][0]["sink"], "local");
    assert_eq!(
        heads["heads"][0]["head"],
        backup_core::digest::Sha256::hex_of(&manifest).as_str()
    );

    let bad = p.join("bad.db");
    std::fs::write(
        &bad,
        backup_testkit::restore_support::corrupt_index_page(&std::fs::read(&db).unwrap()),
    )
    .unwrap();
    let (code, check) = json(&["check", bad.to_str().unwrap(), "--json"]);
    assert_eq!((code, &check["ok"]), (Some(1), &serde_json::json!(false)));
    assert!(!check["problems"].as_array().unwrap().is_empty(), "{check}");
}

/// A health check of a config with no database fails as bad usage (2),
/// never passes.
#[test]
fn status_of_no_database_is_a_usage_error() {
    let p = Project::new();
    p.write_config("[local]\nroot = \"data/backups\"\n");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["status", "--offline"],
    ] {
        let out = p.run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            output_text(&out)
        );
        assert!(output_text(&out).contains("configures no [[database]]"));
    }
}
