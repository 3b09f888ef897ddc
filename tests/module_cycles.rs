//! No import circles between modules, in any crate of the workspace.
//!
//! At every level of a crate's module tree the sibling modules must form an
//! acyclic graph: `a` may use `b` or `b` may use `a`, never both (through any
//! of their submodules). A module using its own parent or children does not
//! count. Test modules (`#[cfg(test)] mod … { }` and `tests.rs` files) are
//! left out.
//!
//! Hand-written rather than a crate: the known tools (cargo-modules and the
//! like) are binaries that build a full rust-analyzer, far too heavy for a CI
//! check that needs only `crate::`/`super::` paths.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

#[test]
fn no_crate_has_an_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut circles = Vec::new();
    let mut crates = 0;
    for entry in fs::read_dir(&root).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            crates += 1;
            circles.extend(crate_circles(&src));
        }
    }
    assert!(
        crates >= 5,
        "found only {crates} crates under {}",
        root.display()
    );
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_is_found() {
    let dir = std::env::temp_dir().join(format!("module-cycles-{}", std::process::id()));
    let src = dir.as_path();
    fs::create_dir_all(src.join("cmd")).unwrap();
    fs::write(src.join("lib.rs"), "mod cmd; mod a; mod b;").unwrap();
    fs::write(src.join("a.rs"), "use crate::{b::{self, X}, c};").unwrap();
    fs::write(src.join("b.rs"), "fn f() { crate::a::g(); }").unwrap();
    fs::write(src.join("cmd/mod.rs"), "mod x; mod y; use crate::a;").unwrap();
    fs::write(src.join("cmd/x.rs"), "use super::y::Z; // crate::b").unwrap();
    fs::write(
        src.join("cmd/y.rs"),
        "use super::super::a;\n#[cfg(test)]\nmod tests { use crate::cmd::x; }",
    )
    .unwrap();
    let circles = crate_circles(src);
    fs::remove_dir_all(src).unwrap();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(
        circles[0].contains("a <-> b") || circles[0].contains("b <-> a"),
        "{circles:?}"
    );
}

/// One line per circle: the level and the modules on it.
fn crate_circles(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    collect_files(src, &mut files);
    let modules: BTreeMap<ModPath, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    // level -> sibling -> siblings it uses
    let mut graph: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    // (level, from, to) -> one place that makes the edge, for the message
    let mut witness: BTreeMap<(ModPath, String, String), String> = BTreeMap::new();
    for (from, file) in &modules {
        let text = strip_tests(&strip_comments(&fs::read_to_string(file).unwrap()));
        for path in referenced_paths(&text, from) {
            let Some(to) = longest_module(&modules, &path) else {
                continue;
            };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // a parent and its descendant
            }
            let level = from[..common].to_vec();
            let (a, b) = (from[common].clone(), to[common].clone());
            let place = format!(
                "{} uses {}",
                file.strip_prefix(src).unwrap().display(),
                path.join("::")
            );
            witness
                .entry((level.clone(), a.clone(), b.clone()))
                .or_insert(place);
            graph
                .entry(level)
                .or_default()
                .entry(a)
                .or_default()
                .insert(b);
        }
    }
    let name = src
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut out = Vec::new();
    for (level, edges) in &graph {
        for scc in cycles(edges) {
            let shown = if level.is_empty() {
                "crate".to_owned()
            } else {
                level.join("::")
            };
            let mut line = format!("{name}: in {shown}: {}", scc.join(" <-> "));
            for ((l, a, b), place) in &witness {
                if l == level && scc.contains(a) && scc.contains(b) {
                    line.push_str(&format!("\n    {a} -> {b}: {place}"));
                }
            }
            out.push(line);
        }
    }
    out
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            // `#[cfg(test)] mod tests;` in a file of its own
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn longest_module(modules: &BTreeMap<ModPath, PathBuf>, path: &[String]) -> Option<ModPath> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains_key(p))
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Drops `#[cfg(test)] mod name { … }` blocks, counting braces.
fn strip_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub(crate) mod ");
        match (is_mod, trimmed.find(['{', ';'])) {
            (true, Some(open)) if trimmed.as_bytes()[open] == b'{' => {
                let mut depth = 0usize;
                let mut end = trimmed.len();
                for (i, c) in trimmed.char_indices().skip(open) {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &trimmed[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Every `crate::…` and `super::…` path in `text`, brace groups expanded,
/// made absolute.
fn referenced_paths(text: &str, module: &[String]) -> Vec<ModPath> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0
            || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if boundary && (starts_with(&chars, i, "crate::") || starts_with(&chars, i, "super::")) {
            let mut base: ModPath = Vec::new();
            if starts_with(&chars, i, "crate::") {
                i += "crate::".len();
            } else {
                // `a/b.rs` and `a/b/mod.rs` both stand for module `a::b`,
                // whose `super` is `a`.
                base = module.to_vec();
                while starts_with(&chars, i, "super::") {
                    base.pop();
                    i += "super::".len();
                }
            }
            let mut trees = Vec::new();
            i = parse_tree(&chars, i, base, &mut trees);
            out.extend(trees);
        } else {
            i += 1;
        }
    }
    out
}

fn starts_with(chars: &[char], at: usize, s: &str) -> bool {
    s.chars()
        .enumerate()
        .all(|(k, c)| chars.get(at + k) == Some(&c))
}

/// Parses `a::b::{c, d::e}` from `at`; pushes each full path.
fn parse_tree(chars: &[char], mut at: usize, mut prefix: ModPath, out: &mut Vec<ModPath>) -> usize {
    loop {
        while chars.get(at).is_some_and(|c| c.is_whitespace()) {
            at += 1;
        }
        if chars.get(at) == Some(&'{') {
            at += 1;
            loop {
                at = parse_tree(chars, at, prefix.clone(), out);
                while chars
                    .get(at)
                    .is_some_and(|c| c.is_whitespace() || *c == ',')
                {
                    at += 1;
                }
                match chars.get(at) {
                    Some('}') => return at + 1,
                    None => return at,
                    _ => {}
                }
            }
        }
        let start = at;
        while chars
            .get(at)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        {
            at += 1;
        }
        let ident: String = chars[start..at].iter().collect();
        if !ident.is_empty() && ident != "self" {
            prefix.push(ident);
        }
        if starts_with(chars, at, "::") {
            at += 2;
        } else {
            out.push(prefix);
            return at;
        }
    }
}

/// Strongly connected components of more than one node (Tarjan), as sorted
/// names.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(next) = s.edges.get(v) {
            for w in next {
                if !s.index.contains_key(w.as_str()) {
                    visit(s, w);
                    let lw = s.low[w.as_str()];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w.as_str()) {
                    let iw = s.index[w.as_str()];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}
