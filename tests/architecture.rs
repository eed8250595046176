//! The crate's module graph, read from its sources: no module depends on one that depends on
//! it back (no cycle, at the level of files), and the dependencies between top-level modules
//! are exactly those `ARCHITECTURE.md` lists in its module graph, so the map stays true.
//!
//! A dependency is any `crate::…` or `super::…` path in a file's code (tests excluded),
//! resolved to the file that defines it, through the `pub use` re-exports of `mod.rs` files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module: its path from the crate root, e.g. `["actors", "embedding_pool"]`.
type Module = Vec<String>;

struct Source {
    module: Module,
    is_dir_module: bool,
    code: String,
}

fn sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel: PathBuf = path.strip_prefix(root).unwrap().to_path_buf();
            let parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            // The binary (main.rs and its cli/) is not part of the library's graph.
            if parts[0] == "main" || parts[0] == "cli" || parts == ["lib"] {
                continue;
            }
            let is_dir_module = parts.last().map(String::as_str) == Some("mod");
            let mut module = parts;
            if is_dir_module {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            // Unit tests may reach across modules freely; the graph is the product's.
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            out.push(Source {
                module,
                is_dir_module,
                code: strip_comments(&code),
            });
        }
    }
    out
}

/// Drops `//` comments (doc comments name modules without depending on them).
fn strip_comments(code: &str) -> String {
    code.lines()
        .map(|l| match l.find("//") {
            Some(at) if !l[..at].contains('"') => &l[..at],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a piece of code names after `crate::` or `super::`, with its braces expanded
/// (`use a::{b, c::d}` → `a::b`, `a::c::d`).
fn paths(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        expand(rest, &mut Vec::new(), &mut out);
    }
    out
}

fn expand(text: &str, head: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let after = &text[ident.len()..];
    if ident.is_empty() {
        if let Some(inner) = after.strip_prefix('{') {
            // Split the group at its top-level commas.
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        let part = inner[start..i].trim();
                        if !part.is_empty() {
                            expand(part, &mut head.clone(), out);
                        }
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let part = inner[start..i].trim();
                        if !part.is_empty() {
                            expand(part, &mut head.clone(), out);
                        }
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        }
        if !head.is_empty() {
            out.push(head.clone());
        }
        return;
    }
    head.push(ident);
    match after.strip_prefix("::") {
        Some(next) => expand(next, head, out),
        None => out.push(head.clone()),
    }
}

struct Crate {
    modules: BTreeSet<Module>,
    /// (directory module, re-exported name) → the module that defines it.
    reexports: BTreeMap<(Module, String), Module>,
}

impl Crate {
    fn new(sources: &[Source]) -> Self {
        let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
        let mut reexports = BTreeMap::new();
        for s in sources.iter().filter(|s| s.is_dir_module) {
            for line in s.code.lines() {
                let line = line.trim();
                let Some(rest) = line
                    .strip_prefix("pub use ")
                    .or_else(|| line.strip_prefix("pub(crate) use "))
                else {
                    continue;
                };
                let mut found = Vec::new();
                expand(rest.trim_end_matches(';'), &mut Vec::new(), &mut found);
                for path in found {
                    let (Some(child), Some(name)) = (path.first(), path.last()) else {
                        continue;
                    };
                    let name = name.split(" as ").last().unwrap_or(name).to_owned();
                    let mut defining = s.module.clone();
                    defining.push(child.clone());
                    if modules.contains(&defining) {
                        reexports.insert((s.module.clone(), name), defining);
                    }
                }
            }
        }
        Self { modules, reexports }
    }

    /// The module that defines what `path` (from the crate root) names.
    fn resolve(&self, path: &[String]) -> Option<Module> {
        let mut best: Option<Module> = None;
        for len in 1..=path.len() {
            let candidate = path[..len].to_vec();
            if self.modules.contains(&candidate) {
                best = Some(candidate);
            } else {
                break;
            }
        }
        let best = best?;
        if let Some(next) = path.get(best.len())
            && let Some(defining) = self.reexports.get(&(best.clone(), next.clone()))
        {
            return Some(defining.clone());
        }
        Some(best)
    }
}

/// Every file-level dependency of the library.
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = sources(&root);
    let krate = Crate::new(&sources);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for s in &sources {
        let code: String = if s.is_dir_module {
            // A directory module's own `mod` and `pub use` lines declare its children.
            s.code
                .lines()
                .filter(|l| {
                    let l = l.trim();
                    !(l.starts_with("pub use")
                        || l.starts_with("pub(crate) use")
                        || l.starts_with("mod ")
                        || l.starts_with("pub mod ")
                        || l.starts_with("pub(crate) mod "))
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            s.code.clone()
        };
        let parent: Module = if s.is_dir_module {
            s.module.clone()
        } else {
            s.module[..s.module.len() - 1].to_vec()
        };
        let mut found: Vec<Vec<String>> = paths(&code, "crate::");
        for relative in paths(&code, "super::") {
            let mut base = if s.is_dir_module {
                s.module[..s.module.len().saturating_sub(1)].to_vec()
            } else {
                parent.clone()
            };
            base.extend(relative);
            found.push(base);
        }
        let entry = edges.entry(s.module.clone()).or_default();
        for path in found {
            if let Some(target) = krate.resolve(&path)
                && target != s.module
            {
                entry.insert(target);
            }
        }
    }
    edges
}

fn name(m: &Module) -> String {
    m.join("::")
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &Module) {
            self.index.insert(v.clone(), self.next);
            self.low.insert(v.clone(), self.next);
            self.next += 1;
            self.stack.push(v.clone());
            self.on_stack.insert(v.clone());
            for w in self.edges.get(v).cloned().unwrap_or_default() {
                if !self.index.contains_key(&w) {
                    self.visit(&w);
                    let low = self.low[v].min(self.low[&w]);
                    self.low.insert(v.clone(), low);
                } else if self.on_stack.contains(&w) {
                    let low = self.low[v].min(self.index[&w]);
                    self.low.insert(v.clone(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = &w == v;
                    component.push(w);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.found
}

#[test]
fn no_module_depends_on_one_that_depends_on_it() {
    let edges = graph();
    assert!(edges.len() > 40, "too few modules read: {}", edges.len());
    assert!(
        edges[&vec!["actors".to_owned(), "embedding_pool".to_owned()]]
            .contains(&vec!["actors".to_owned(), "embedding_worker".to_owned()]),
        "the reader misses dependencies"
    );
    let found = cycles(&edges);
    let shown: Vec<String> = found
        .iter()
        .map(|c| c.iter().map(name).collect::<Vec<_>>().join(" ↔ "))
        .collect();
    assert!(found.is_empty(), "import cycles: {shown:#?}");
}

/// Top-level module → the top-level modules it uses, as `ARCHITECTURE.md` lists them in the
/// fenced block after the line `<!-- module graph -->`.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let block = doc
        .split("<!-- module graph -->")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("ARCHITECTURE.md has a fenced module graph after <!-- module graph -->");
    let mut out = BTreeMap::new();
    for line in block.lines().skip(1) {
        let Some((from, to)) = line.split_once("→") else {
            continue;
        };
        let uses: BTreeSet<String> = to
            .split_whitespace()
            .filter(|w| *w != "-")
            .map(str::to_owned)
            .collect();
        out.insert(from.trim().to_owned(), uses);
    }
    out
}

#[test]
fn architecture_md_lists_the_module_graph() {
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in graph() {
        let entry = actual.entry(from[0].clone()).or_default();
        for target in targets {
            if target[0] != from[0] {
                entry.insert(target[0].clone());
            }
        }
    }
    let printed: Vec<String> = actual
        .iter()
        .map(|(from, to)| {
            let to: Vec<&str> = to.iter().map(String::as_str).collect();
            format!(
                "{from:<10} → {}",
                if to.is_empty() {
                    "-".into()
                } else {
                    to.join(" ")
                }
            )
        })
        .collect();
    println!("{}", printed.join("\n"));
    assert_eq!(
        documented(),
        actual,
        "ARCHITECTURE.md's module graph is not the code's; the code's is:\n{}",
        printed.join("\n")
    );
}
