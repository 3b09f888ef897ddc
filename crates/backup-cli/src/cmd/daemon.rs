//! `sqlite-backup daemon`.

use anyhow::{Result, bail};

use crate::Exit;
use crate::args::{Cli, DaemonArgs};

pub fn run(_cli: &Cli, _args: &DaemonArgs) -> Result<Exit> {
    bail!("`daemon` is not implemented yet")
}
