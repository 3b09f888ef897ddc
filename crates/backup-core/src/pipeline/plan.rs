//! Planning a run: which artifacts each database gets, under which names,
//! so `--dry-run` prints exactly what a run would write.

use jiff::Timestamp;

use super::{Options, Target};
use crate::database::Database;
use crate::manifest;
use crate::naming::{self, NameContext};

/// One artifact a run will write.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedArtifact {
    /// Index into [`Plan::targets`].
    pub target: usize,
    /// Sink name.
    pub sink: String,
    /// Artifact key.
    pub key: String,
    /// Sidecar key.
    pub sidecar_key: String,
}

/// What a run does with one database.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Back it up to these artifacts.
    Backup(Vec<PlannedArtifact>),
    /// Skip it (a WARN, not a failure): the source does not exist.
    Skip(String),
}

/// One database of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanItem {
    /// The database.
    pub database: Database,
    /// What happens to it.
    pub action: Action,
}

/// A resolved run, ready to print or execute.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Run id (also the manifest name).
    pub run_id: String,
    /// Planned start; artifact names use it.
    pub started_at: Timestamp,
    /// Per database.
    pub items: Vec<PlanItem>,
    /// Where artifacts go; [`PlannedArtifact::target`] indexes this.
    pub targets: Vec<Target>,
    /// How.
    pub options: Options,
}

impl Plan {
    /// Objects a fully successful run writes: artifact + sidecar per
    /// artifact, plus one manifest per sink used.
    pub fn expected_objects(&self) -> usize {
        let mut sinks = std::collections::BTreeSet::new();
        let mut n = 0;
        for item in &self.items {
            if let Action::Backup(arts) = &item.action {
                n += 2 * arts.len();
                sinks.extend(arts.iter().map(|a| a.target));
            }
        }
        // Each sink used also gets a manifest and the manifest's sidecar.
        n + 2 * sinks.len()
    }
}

/// Resolve which artifacts each database gets, without touching anything
/// but `stat` of the sources.
pub fn plan(databases: &[Database], targets: &[Target], opts: &Options, now: Timestamp) -> Plan {
    let run_id = manifest::new_run_id(now);
    let items = databases
        .iter()
        .map(|db| {
            let action = if !db.path.exists() {
                Action::Skip(format!("source {} does not exist", db.path.display()))
            } else {
                let cold = opts.cold || opts.cold_labels.contains(&db.label);
                let ext = format!(
                    ".db{}{}",
                    opts.compression.extension(),
                    if db.encryption.is_some() { ".age" } else { "" }
                );
                Action::Backup(
                    targets
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| cold || !t.cold_only)
                        .map(|(i, t)| {
                            let key = t.template.render(&NameContext {
                                label: &db.label,
                                tag: opts.tag.as_deref(),
                                time: now,
                                run_id: &run_id,
                                ext: &ext,
                            });
                            PlannedArtifact {
                                target: i,
                                sink: t.sink.name().to_string(),
                                sidecar_key: naming::sidecar_key(&key),
                                key,
                            }
                        })
                        .collect(),
                )
            };
            PlanItem {
                database: db.clone(),
                action,
            }
        })
        .collect();
    Plan {
        run_id,
        started_at: now,
        items,
        targets: targets.to_vec(),
        options: opts.clone(),
    }
}
