//! Artifact name templates: `{label}-{tag}-{yyyymmdd}-{time}{ext}` and friends.
//!
//! | placeholder  | example        |
//! |--------------|----------------|
//! | `{label}`    | `mission-control` |
//! | `{tag}`      | `r75`, `session`, `premigrate`, `phase1`; `auto` when untagged |
//! | `{date}`     | `2026-11-23` (UTC) |
//! | `{yyyymmdd}` | `20261123` (UTC) |
//! | `{time}`     | `130812` (UTC, HHMMSS) |
//! | `{run}`      | the run id, unique per run |
//! | `{ext}`      | `.db.zst`, `.db.gz`, `.db` |
//!
//! A rendered name is always a relative key below the sink's root: the
//! template is checked so that no label or tag can make it escape.

use jiff::Timestamp;

/// Default template of local artifact names.
pub const DEFAULT_LOCAL_TEMPLATE: &str = "{label}-{tag}-{yyyymmdd}-{time}{ext}";

/// A parsed, validated template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    overwrite: bool,
}

/// What a template is filled with.
#[derive(Debug, Clone)]
pub struct NameContext<'a> {
    /// Database label (validated).
    pub label: &'a str,
    /// Trigger tag; `None` renders as `auto`.
    pub tag: Option<&'a str>,
    /// Snapshot time.
    pub time: Timestamp,
    /// Run id.
    pub run_id: &'a str,
    /// Extension including `.db`.
    pub ext: &'a str,
}

const PLACEHOLDERS: [&str; 7] = ["label", "tag", "date", "yyyymmdd", "time", "run", "ext"];

/// A template that cannot name artifacts.
#[derive(Debug, thiserror::Error)]
#[error("template {template:?} {problem}")]
pub struct TemplateError {
    /// The template as given.
    pub template: String,
    /// What is wrong with it.
    #[source]
    pub problem: TemplateProblem,
}

/// Why a template is refused.
#[derive(Debug, thiserror::Error)]
pub enum TemplateProblem {
    /// A `{` without its `}`.
    #[error("has an unclosed `{{`")]
    Unclosed,
    /// A `}` without its `{`.
    #[error("has a stray `}}`")]
    Stray,
    /// A `{name}` that is not a placeholder.
    #[error("has an unknown placeholder {{{0}}}; known: {known}", known = PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" "))]
    UnknownPlaceholder(String),
    /// No `{label}`.
    #[error("lacks {{label}}: two databases would share one name")]
    NoLabel,
    /// No `{time}` or `{run}`, and overwriting is not allowed.
    #[error("would make two runs of the same day overwrite each other (no {{time}} or {{run}})")]
    Overwrites,
    /// It renders keys a sink refuses.
    #[error("makes keys a sink refuses: {0}")]
    BadKey(#[source] crate::sink::SinkError),
    /// It renders sidecar or manifest names.
    #[error("collides with sidecar or manifest names")]
    Collides,
    /// It renders hidden or `.partial-` names.
    #[error("makes hidden or `.partial-` names, which are reserved for temporary files")]
    Reserved,
}

impl Template {
    /// Parse and check a template. Unless `allow_overwrite`, it must contain
    /// `{time}` or `{run}` so that two runs of the same day never share a name.
    ///
    /// ```
    /// use backup_core::naming::Template;
    /// assert!(Template::parse("{date}/{label}-{time}{ext}", false).is_ok());
    /// assert!(Template::parse("{date}/{label}.db.gz", false).is_err());
    /// assert!(Template::parse("{date}/{label}.db.gz", true).is_ok());
    /// assert!(Template::parse("../{label}-{time}{ext}", false).is_err());
    /// ```
    pub fn parse(text: &str, allow_overwrite: bool) -> Result<Self, TemplateError> {
        let bad = |problem| TemplateError {
            template: text.to_string(),
            problem,
        };
        let mut rest = text;
        let mut used = Vec::new();
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad(TemplateProblem::Unclosed))?;
            let name = &rest[open + 1..open + close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(bad(TemplateProblem::UnknownPlaceholder(name.to_string())));
            }
            used.push(name);
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(bad(TemplateProblem::Stray));
        }
        if !used.contains(&"label") {
            return Err(bad(TemplateProblem::NoLabel));
        }
        if !allow_overwrite && !used.contains(&"time") && !used.contains(&"run") {
            return Err(bad(TemplateProblem::Overwrites));
        }
        // Render with harmless values and check the shape of the key.
        let probe = Template {
            text: text.to_string(),
            overwrite: allow_overwrite,
        }
        .render(&NameContext {
            label: "x",
            tag: Some("t"),
            time: Timestamp::UNIX_EPOCH,
            run_id: "r",
            ext: ".db",
        });
        crate::sink::validate_key(&probe).map_err(|e| bad(TemplateProblem::BadKey(e)))?;
        if probe.ends_with(".sha256") || probe.starts_with("manifests/") {
            return Err(bad(TemplateProblem::Collides));
        }
        // Hidden names and `.partial-` names belong to the sinks themselves
        // (upload temporaries, the `.tmp` scratch folder): the local sink
        // does not list them, and the next run deletes `.partial-<pid>`
        // files as leftovers of a killed process.
        if probe.split('/').any(|s| s.starts_with('.')) || probe.contains(".partial-") {
            return Err(bad(TemplateProblem::Reserved));
        }
        Ok(Template {
            text: text.to_string(),
            overwrite: allow_overwrite,
        })
    }

    /// Whether a new artifact may replace an existing one of the same name
    /// (only for templates parsed with `allow_overwrite`).
    pub(crate) fn allows_overwrite(&self) -> bool {
        self.overwrite
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Fill in the placeholders.
    pub fn render(&self, ctx: &NameContext<'_>) -> String {
        let z = ctx.time;
        self.text
            .replace("{label}", ctx.label)
            .replace("{tag}", ctx.tag.unwrap_or("auto"))
            .replace("{date}", &z.strftime("%Y-%m-%d").to_string())
            .replace("{yyyymmdd}", &z.strftime("%Y%m%d").to_string())
            .replace("{time}", &z.strftime("%H%M%S").to_string())
            .replace("{run}", ctx.run_id)
            .replace("{ext}", ctx.ext)
    }
}

/// The sidecar key of an artifact key.
pub fn sidecar_key(artifact_key: &str) -> String {
    format!("{artifact_key}.sha256")
}

/// The last path segment of a key.
pub fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_seed_layouts() {
        let time: Timestamp = "2026-04-16T13:08:12Z".parse().unwrap();
        let ctx = NameContext {
            label: "colibri",
            tag: Some("r75"),
            time,
            run_id: "20260416T130812Z-ab12",
            ext: ".db.zst",
        };
        let local = Template::parse(crate::naming::DEFAULT_LOCAL_TEMPLATE, false).unwrap();
        assert_eq!(local.render(&ctx), "colibri-r75-20260416-130812.db.zst");
        let seed = Template::parse("{date}/{label}.db.gz", true).unwrap();
        assert_eq!(seed.render(&ctx), "2026-04-16/colibri.db.gz");
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "{label}-{time",
            "{label}-{nope}{time}",
            "{time}.db",
            "/{label}{time}",
            "a/../{label}{time}",
            "manifests/{label}{time}",
            ".{label}-{time}{ext}",
            ".tmp/{label}-{time}{ext}",
            "{label}-{time}/{ext}",
            "{label}-{yyyymmdd}.partial-{time}",
        ] {
            assert!(Template::parse(bad, false).is_err(), "{bad}");
        }
    }
}
