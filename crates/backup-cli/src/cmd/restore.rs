//! `sqlite-backup restore`.

use anyhow::{Result, bail};

use crate::Exit;
use crate::args::{Cli, RestoreArgs};

pub fn run(_cli: &Cli, _args: &RestoreArgs) -> Result<Exit> {
    bail!("`restore` is not implemented yet")
}
