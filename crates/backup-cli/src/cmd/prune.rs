//! `sqlite-backup prune`.

use anyhow::{Result, bail};

use crate::Exit;
use crate::args::{Cli, PruneArgs};

pub fn run(_cli: &Cli, _args: &PruneArgs) -> Result<Exit> {
    bail!("`prune` is not implemented yet")
}
