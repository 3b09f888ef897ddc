//! `sqlite-backup schedule`.

use anyhow::{Result, bail};

use crate::Exit;
use crate::args::{Cli, ScheduleCommand};

pub fn run(_cli: &Cli, _args: &ScheduleCommand) -> Result<Exit> {
    bail!("`schedule` is not implemented yet")
}
