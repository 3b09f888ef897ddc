//! Whose database a snapshot is: the machine and the live file it was
//! taken from.
//!
//! A fleet often shares one bucket, and every host may call its database
//! `app`. The label alone then names several databases; the source tells
//! them apart. Each entry records its host (`host`) and the absolute path
//! of the live file (`source`). Incremental chains never cross sources, and
//! restore, drill, verify, status, list and prune act on this database's
//! own source unless told otherwise.
//!
//! The host is the machine's name unless a config or [`Database::host`]
//! sets one: containers whose host name changes on every start should.

use std::fmt;
use std::path::Path;

use crate::database::Database;
use crate::manifest::{Entry, Listed};

/// A machine and the absolute path of a live database file on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The machine's name; `None` for entries written before sources were
    /// recorded.
    pub host: Option<String>,
    /// The live file's absolute path on that machine.
    pub path: String,
}

impl Source {
    /// The source an entry records.
    pub fn of(entry: &Entry) -> Source {
        Source {
            host: entry.host.clone(),
            path: entry.source.clone(),
        }
    }

    /// This database's source on this machine.
    pub fn local(db: &Database) -> Source {
        Source {
            host: Some(db.host.clone().unwrap_or_else(this_host)),
            path: absolute(&db.path),
        }
    }

    /// Whether `entry` was taken from this source. An entry from before
    /// sources were recorded has no host, and its path may be relative to
    /// wherever that run started: it is ours when its path ends ours.
    pub fn owns(&self, entry: &Entry) -> bool {
        match &entry.host {
            Some(h) => Some(h) == self.host.as_ref() && entry.source == self.path,
            None => {
                let theirs: std::path::PathBuf = Path::new(&entry.source)
                    .components()
                    .filter(|c| *c != std::path::Component::CurDir)
                    .collect();
                Path::new(&self.path).ends_with(theirs)
            }
        }
    }
}

impl fmt::Display for Source {
    /// `host:/path`, the form `--source` takes (`/path` alone for an entry
    /// without a host).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(h) => write!(f, "{h}:{}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// Which sources' snapshots a command looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// The database's own source (the default).
    #[default]
    Own,
    /// One named source: `host:/path` as `list` prints it, or a host name
    /// alone when that host backed up one file under the label.
    Named(String),
    /// Every source.
    All,
}

impl Scope {
    /// Whether `entry` is in scope for `db`.
    pub fn admits(&self, db: &Database, entry: &Entry) -> bool {
        self.admits_from(&Source::local(db), entry)
    }

    /// [`admits`](Self::admits) with `own` computed once.
    pub fn admits_from(&self, own: &Source, entry: &Entry) -> bool {
        match self {
            Scope::Own => own.owns(entry),
            Scope::Named(name) => is_named(name, entry),
            Scope::All => true,
        }
    }
}

/// Whether `name` (`host:/path` as listed, or a host name alone) names the
/// source of `entry`.
pub fn is_named(name: &str, entry: &Entry) -> bool {
    let theirs = Source::of(entry);
    theirs.to_string() == name || theirs.host.as_deref() == Some(name)
}

/// Why no one source's backups could be chosen: never fall back to another
/// machine's database silently, and never mix two databases' snapshots.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Nothing of the label from the source asked for, while other sources
    /// have backups of it.
    #[error(
        "no backup of {label:?} from {wanted}; the sinks hold {label:?} only from {}: \
         another machine's or file's database. To use one, name it: --source {}",
        others.join(", "),
        others.first().map(String::as_str).unwrap_or("HOST:/PATH")
    )]
    Elsewhere {
        /// The label.
        label: String,
        /// The source asked for (`web-1:/srv/app.db`), or what `--source` said.
        wanted: String,
        /// Every source that has backups of the label, as `--source` takes them.
        others: Vec<String>,
    },
    /// A host name matched backups of more than one file.
    #[error(
        "--source {wanted} matches backups of {label:?} from several files: {}; name one of them",
        matches.join(", ")
    )]
    Ambiguous {
        /// The label.
        label: String,
        /// What `--source` said.
        wanted: String,
        /// The sources it matched.
        matches: Vec<String>,
    },
}

/// The listed backups of `db`'s label in `scope`, in catalog order: one
/// source's, unless the scope is [`Scope::All`]. None at all is
/// `Ok(vec![])`.
pub fn select<'a>(
    catalog: &'a [Listed],
    db: &Database,
    scope: &Scope,
) -> Result<Vec<&'a Listed>, SourceError> {
    let own = Source::local(db);
    let (chosen, others): (Vec<&Listed>, Vec<&Listed>) = catalog
        .iter()
        .filter(|l| l.entry.label == db.label)
        .partition(|l| scope.admits_from(&own, &l.entry));
    let names = |listed: &[&Listed]| -> Vec<String> {
        let set: std::collections::BTreeSet<String> = listed
            .iter()
            .map(|l| Source::of(&l.entry).to_string())
            .collect();
        set.into_iter().collect()
    };
    if chosen.is_empty() && !others.is_empty() {
        return Err(SourceError::Elsewhere {
            label: db.label.clone(),
            wanted: match scope {
                Scope::Named(name) => name.clone(),
                _ => format!("this machine's file ({own})"),
            },
            others: names(&others),
        });
    }
    if let Scope::Named(name) = scope {
        let matches = names(&chosen);
        if matches.len() > 1 {
            return Err(SourceError::Ambiguous {
                label: db.label.clone(),
                wanted: name.clone(),
                matches,
            });
        }
    }
    Ok(chosen)
}

/// The path as the source identity records it: absolute, symlinks kept
/// (the application's view of its file), without touching the disk, so a
/// restore onto a machine where the file is gone still knows its source.
fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// This machine's name, as `hostname` prints it.
pub fn this_host() -> String {
    #[cfg(unix)]
    if let Some(name) = nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .filter(|n| !n.is_empty())
    {
        return name;
    }
    std::env::var("COMPUTERNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: Option<&str>, path: &str) -> Entry {
        let mut e = crate::manifest::sample_entry();
        e.host = host.map(str::to_string);
        e.source = path.into();
        e
    }

    #[test]
    fn a_source_owns_its_own_entries_and_legacy_ones_of_its_path() {
        let db = Database::new("app", "/srv/app.db").host("web-1");
        let own = Source::local(&db);
        assert_eq!(own.to_string(), "web-1:/srv/app.db");
        assert!(own.owns(&entry(Some("web-1"), "/srv/app.db")));
        assert!(own.owns(&entry(None, "/srv/app.db")));
        assert!(!own.owns(&entry(Some("web-2"), "/srv/app.db")));
        assert!(!own.owns(&entry(Some("web-1"), "/srv/other.db")));
    }

    #[test]
    fn a_named_scope_takes_the_printed_form_or_a_host_name() {
        let db = Database::new("app", "/srv/app.db").host("web-1");
        let theirs = entry(Some("web-2"), "/data/app.db");
        assert!(Scope::Named("web-2:/data/app.db".into()).admits(&db, &theirs));
        assert!(Scope::Named("web-2".into()).admits(&db, &theirs));
        assert!(!Scope::Named("web-1".into()).admits(&db, &theirs));
        assert!(!Scope::Own.admits(&db, &theirs));
        assert!(Scope::All.admits(&db, &theirs));
    }

    #[test]
    fn an_entry_without_a_host_is_ours_when_its_path_ends_ours() {
        let own = Source::local(&Database::new("app", "/srv/data/app.db").host("web-1"));
        assert!(own.owns(&entry(None, "./data/app.db")));
        assert!(own.owns(&entry(None, "app.db")));
        assert!(!own.owns(&entry(None, "/other/app.db")));
        assert!(!own.owns(&entry(None, "other.db")));
    }

    #[test]
    fn a_host_name_matching_two_files_is_ambiguous() {
        let db = Database::new("app", "/srv/app.db").host("web-1");
        let listed = |e: Entry| Listed {
            sink: "local".into(),
            placement: crate::sink::Placement::Local,
            run_id: "r".into(),
            entry: e,
        };
        let catalog = [
            listed(entry(Some("web-2"), "/a/app.db")),
            listed(entry(Some("web-2"), "/b/app.db")),
        ];
        let catalog: Vec<Listed> = catalog
            .into_iter()
            .map(|mut l| {
                l.entry.label = "app".into();
                l
            })
            .collect();
        let e = select(&catalog, &db, &Scope::Own).unwrap_err();
        assert!(
            matches!(&e, SourceError::Elsewhere { others, .. } if others.len() == 2),
            "{e}"
        );
        let e = select(&catalog, &db, &Scope::Named("web-2".into())).unwrap_err();
        assert!(matches!(e, SourceError::Ambiguous { .. }), "{e}");
        let one = select(&catalog, &db, &Scope::Named("web-2:/b/app.db".into())).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(select(&catalog, &db, &Scope::All).unwrap().len(), 2);
    }

    #[test]
    fn a_relative_path_is_recorded_absolute() {
        let db = Database::new("app", "app.db");
        assert!(Source::local(&db).path.starts_with('/'));
        assert!(!this_host().is_empty());
    }
}
