//! `sqlite-backup status`.

use anyhow::{Result, bail};

use crate::Exit;
use crate::args::{Cli, StatusArgs};

pub fn run(_cli: &Cli, _args: &StatusArgs) -> Result<Exit> {
    bail!("`status` is not implemented yet")
}
