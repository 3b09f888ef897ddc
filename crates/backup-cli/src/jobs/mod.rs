//! What a command starts and the daemon repeats: the backup and the drill
//! jobs, each with its lock, state file, alerts and metrics. The commands
//! in `cmd` only parse arguments and print.

pub mod backup;
pub mod drill;
