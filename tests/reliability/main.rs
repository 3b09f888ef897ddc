//! Reliability suites that need no precise timing: corrupted artifacts and
//! catalogs, hostile input, failing sinks, awkward sources.

mod reliability_corruption;
mod reliability_input;
mod reliability_sinks;
mod reliability_source;
