//! `sqlite-backup completions` and `sqlite-backup man`: generated from the
//! same clap definitions as `--help`, so they never drift from it.

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::Exit;
use crate::args::{Cli, CompletionsArgs, ManArgs};

const BIN: &str = "sqlite-backup";
/// [`BIN`] without its hyphen (see [`completions`]).
const BIN_ALIAS: &str = "sqlite_backup";

pub fn completions(args: &CompletionsArgs) -> Result<Exit> {
    let script = match args.shell {
        // clap_complete's bash script spells a hyphenated program's
        // subcommand states two ways, so nothing past the subcommand
        // completes (clap-rs/clap#6421): generate it for a name without
        // the hyphen and register it for the real one.
        clap_complete::Shell::Bash => {
            generate(args.shell, BIN_ALIAS)
                .lines()
                .map(|l| match l.trim_start().starts_with("complete -F") {
                    true => l.replace(&format!(" {BIN_ALIAS}"), &format!(" {BIN}")),
                    false => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
        shell => generate(shell, BIN),
    };
    out!("{script}");
    Ok(Exit::Ok)
}

fn generate(shell: clap_complete::Shell, name: &'static str) -> String {
    let mut cmd = Cli::command().name(name);
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

pub fn man(args: &ManArgs) -> Result<Exit> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let written = clap_mangen::generate_to(Cli::command(), &args.dir)
        .with_context(|| format!("writing man pages into {}", args.dir.display()));
    written?;
    let mut pages: Vec<String> = std::fs::read_dir(&args.dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sqlite-backup") && n.ends_with(".1"))
        .collect();
    pages.sort();
    outln!(
        "wrote {} man pages into {}",
        pages.len(),
        args.dir.display()
    );
    Ok(Exit::Ok)
}
