//! `sqlite-backup catalog`.

use anyhow::{Result, bail};

use crate::Exit;
use crate::args::{CatalogCommand, Cli};

pub fn run(_cli: &Cli, _args: &CatalogCommand) -> Result<Exit> {
    bail!("`catalog` is not implemented yet")
}
