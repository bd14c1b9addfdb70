//! The kernel's layer check (`cargo xtask lint`): the folders (and single-file modules) of
//! `kernel/src` are layers, and a module may name only modules of lower layers
//! (DESIGN.md §9).
//!
//! The check reads every `.rs` file under `kernel/src`, skips comments, and collects each
//! `crate::NAME` it names, including the names inside `use crate::{…}` groups. A file's own
//! module is the first component of its path (`ipc/fast.rs` is in `ipc`); `main.rs` and
//! `upcall.rs` are the top. An import of a module at the same or a higher rank, or of a
//! module the table does not know, is an error that names the file and line.

use std::path::{Path, PathBuf};

/// The layers, lowest first: `(module, rank)`. Modules of equal rank may not name each
/// other. `main.rs` and `upcall.rs` (the crate root) rank above everything.
pub const LAYERS: &[(&str, u32)] = &[
    ("sync", 0),
    ("log", 1),
    ("time", 1),
    ("hwirq", 1),
    ("boot", 2),
    ("stats", 2),
    ("trace", 2),
    ("mm", 3),
    ("obj", 4),
    ("task", 5),
    ("ipc", 6),
    ("irq", 7),
    ("proc", 8),
    ("syscall", 9),
    ("testing", 10),
    ("upcall", 11),
];

/// Items of the crate root every layer may name: the arch alias and the log macros.
const ROOT_ITEMS: &[&str] = &["Cpu", "println", "print"];

/// The rank of the crate root (`main.rs`).
const ROOT_RANK: u32 = 12;

/// One import that breaks the layering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub file: PathBuf,
    pub line: usize,
    pub from: String,
    pub to: String,
    pub why: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            out,
            "{}:{}: `{}` may not use `crate::{}`: {}",
            self.file.display(),
            self.line,
            self.from,
            self.to,
            self.why
        )
    }
}

fn rank(module: &str) -> Option<u32> {
    if module == "main" {
        return Some(ROOT_RANK);
    }
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|&(_, rank)| rank)
}

/// The module a file under `kernel/src` belongs to.
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.strip_suffix(".rs").unwrap_or(&first).to_owned()
}

/// The text of `line` outside comments (a `//` that is not inside a string literal ends
/// the code; block comments are not used in the kernel).
fn code_part(line: &str) -> &str {
    let mut in_string = false;
    let mut previous = '\0';
    for (index, character) in line.char_indices() {
        match character {
            '"' if previous != '\\' => in_string = !in_string,
            '/' if !in_string && previous == '/' => return &line[..index - 1],
            _ => {}
        }
        previous = character;
    }
    line
}

/// The top-level module names `code` refers to through `crate::`.
fn referenced(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `$crate::` inside macros is the same crate; count it too.
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a, b::c, d}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            for character in group.chars() {
                match character {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_first_segment(&mut names, &item);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || character != '{' {
                    item.push(character);
                }
            }
            push_first_segment(&mut names, &item);
        } else {
            push_first_segment(&mut names, after);
        }
        rest = after;
    }
    names
}

fn push_first_segment(names: &mut Vec<String>, path: &str) {
    let name: String = path
        .trim()
        .chars()
        .take_while(|character| character.is_alphanumeric() || *character == '_')
        .collect();
    if !name.is_empty() && name != "self" {
        names.push(name);
    }
}

/// Check one file's text, `relative` to `kernel/src`.
pub fn check_file(relative: &Path, text: &str) -> Vec<Violation> {
    let from = module_of(relative);
    let Some(from_rank) = rank(&from) else {
        return vec![Violation {
            file: relative.to_path_buf(),
            line: 1,
            from: from.clone(),
            to: from,
            why: "this module is not in the layer table (xtask/src/layers.rs)".to_owned(),
        }];
    };
    let mut violations = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for to in referenced(code_part(line)) {
            if to == from || ROOT_ITEMS.contains(&to.as_str()) {
                continue;
            }
            let why = match rank(&to) {
                None => "not a module the layer table knows".to_owned(),
                Some(to_rank) if to_rank >= from_rank => {
                    format!("`{to}` (rank {to_rank}) is not below `{from}` (rank {from_rank})")
                }
                Some(_) => continue,
            };
            violations.push(Violation {
                file: relative.to_path_buf(),
                line: index + 1,
                from: from.clone(),
                to,
                why,
            });
        }
    }
    violations
}

fn rust_files(directory: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Check every file under `source` (the kernel's `src`). `Err` lists every violation.
pub fn check_tree(source: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    rust_files(source, &mut files)
        .map_err(|error| format!("cannot read {}: {error}", source.display()))?;
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
        let relative = file.strip_prefix(source).unwrap_or(file);
        violations.extend(check_file(relative, &text));
    }
    if violations.is_empty() {
        return Ok(());
    }
    let mut report = format!(
        "{} import(s) against the kernel's layers (DESIGN.md §9):\n",
        violations.len()
    );
    for violation in &violations {
        report.push_str(&format!("  kernel/src/{violation}\n"));
    }
    Err(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_follows_its_layers() {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/src");
        if let Err(report) = check_tree(&source) {
            panic!("{report}");
        }
    }

    #[test]
    fn an_upward_import_is_refused_with_file_and_line() {
        let text = "//! obj\nuse crate::sync::Lock;\nuse crate::ipc::close_endpoint;\n";
        let violations = check_file(Path::new("obj/endpoint.rs"), text);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].line, 3);
        assert_eq!(violations[0].to, "ipc");
        assert!(violations[0].to_string().contains("obj/endpoint.rs:3"));
    }

    #[test]
    fn groups_paths_and_macros_are_seen() {
        let text = "use crate::{Cpu, sync::Lock, task::sched};\nfn f() { crate::proc::kill(); }\n";
        let found: Vec<String> = check_file(Path::new("ipc/mod.rs"), text)
            .into_iter()
            .map(|violation| violation.to)
            .collect();
        assert_eq!(found, ["proc"]);
    }

    #[test]
    fn comments_and_same_rank_siblings() {
        // A doc link to a higher layer is no import.
        assert!(check_file(Path::new("mm/heap.rs"), "/// see [`crate::ipc`]\n").is_empty());
        // Equal ranks may not name each other.
        let violations = check_file(Path::new("log.rs"), "use crate::time::ticks;\n");
        assert_eq!(violations.len(), 1);
        // An unknown module is refused.
        let violations = check_file(Path::new("newthing/mod.rs"), "fn f() {}\n");
        assert_eq!(violations.len(), 1);
    }

    #[test]
    fn the_root_may_use_everything() {
        assert!(check_file(Path::new("main.rs"), "use crate::testing::run;\n").is_empty());
    }
}
