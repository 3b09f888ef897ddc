//! One module per subcommand; each takes its parsed args and returns an exit.

mod adopt;
mod backup;
mod catalog;
mod check;
mod daemon;
mod demo;
mod docs;
mod drill;
mod list;
mod prune;
mod report;
mod restore;
mod schedule;
mod status;
mod verify;

use anyhow::Result;

use crate::Exit;
use crate::args::{Cli, Command};

/// Dispatch.
pub fn run(cli: &Cli) -> Result<Exit> {
    match &cli.command {
        Command::Backup(a) => backup::run(cli, a),
        Command::List(a) => list::run(cli, a),
        Command::Verify(a) => verify::run(cli, a),
        Command::Check(a) => check::run(cli, a),
        Command::Demo(a) => demo::run(cli, a),
        Command::Restore(a) => restore::run(cli, a),
        Command::Prune(a) => prune::run(cli, a),
        Command::Status(a) => status::run(cli, a),
        Command::Daemon(a) => daemon::run(cli, a),
        Command::Schedule(a) => schedule::run(cli, a),
        Command::Catalog(a) => catalog::run(cli, a),
        Command::Drill(a) => drill::run(cli, a),
        Command::Report(a) => report::run(cli, a),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    }
}
