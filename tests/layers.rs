//! The layer check: no module of the library imports a higher layer, and no
//! source file grows past [`MAX_LINES`] unless its docs say why it is one
//! piece.
//!
//! Every file under `src/` (but `src/bin`, a separate crate) belongs to the
//! layer of its top-level module (`src/log/open.rs` to `log`). Its code's
//! `crate::…` paths, `use crate::{a::B, c}` groups included, name the
//! modules it uses; names re-exported at the crate root (`crate::Log`) count
//! as the module they come from. Comments and `#[cfg(test)]` modules are
//! left out: docs may point anywhere, and a unit test may drive a higher
//! layer (the verifier's tests write logs with `Log`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may use modules of a lower rank only.
/// The same table opens `src/lib.rs`'s docs; the test checks they agree.
const LAYERS: &[(u32, &str)] = &[
    (0, "limits"),
    (0, "le"),
    (1, "event"),
    (2, "error"),
    (3, "hash"),
    (4, "storage"),
    (5, "format"),
    (6, "index"),
    (6, "retention"),
    (7, "tiles"),
    (8, "verify"),
    (9, "log"),
    (10, "query"),
    (11, "archive"),
    (11, "delivery"),
    (11, "evidence"),
    (11, "witness"),
    (12, "cluster"),
    (13, "server"),
];

/// Lines a source file may have without saying why it is one piece.
const MAX_LINES: usize = 900;

/// Files still over [`MAX_LINES`], waiting to be split (issue 13). The list
/// may only shrink: a file on it that is short enough fails the test.
const NOT_YET_SPLIT: &[&str] = &[];

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(_, m)| *m == module).map(|(r, _)| *r)
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a library file belongs to; `None` for the crate
/// root and the binary.
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src_dir()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "bin" => None,
        _ => Some(first.trim_end_matches(".rs").to_string()),
    }
}

/// `text` without comments (line and block) and string literals' contents,
/// so that neither a doc link nor a message names a module.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            // A string literal (raw strings in this crate hold no quotes
            // that would end one early for this scan's purpose).
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `code` without the `#[cfg(test)]` items (test modules and functions).
fn strip_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item ends at the brace closing its first `{`, or at a `;`
        // that comes first (`#[cfg(test)] mod tests;`, a `use`).
        let open = after.find('{');
        let semi = after.find(';');
        let end = match (open, semi) {
            (Some(o), Some(s)) if s < o => s + 1,
            (Some(o), _) => {
                let mut depth = 0;
                let mut end = after.len();
                for (k, ch) in after[o..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = o + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The first path segment of each item of a `{…}` group (nested groups
/// split at their top level only), e.g. `{a::B, c, d::{E, F}}` gives a, c, d.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for ch in group.chars() {
        match ch {
            '{' => {
                depth += 1;
                item.push(ch);
            }
            '}' => {
                depth -= 1;
                item.push(ch);
            }
            ',' if depth == 0 => {
                heads.push(std::mem::take(&mut item));
            }
            _ => item.push(ch),
        }
    }
    heads.push(item);
    heads
        .iter()
        .filter_map(|i| {
            let head: String = i
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!head.is_empty()).then_some(head)
        })
        .collect()
}

/// The names after `crate::` in `code`: a module, or a name re-exported at
/// the crate root.
fn crate_refs(code: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        let tail = rest.trim_start();
        if let Some(group) = tail.strip_prefix('{') {
            let mut depth = 1;
            let mut end = group.len();
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            refs.extend(group_heads(&group[..end]));
        } else {
            let head: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !head.is_empty() {
                refs.push(head);
            }
        }
    }
    refs
}

/// The crate root's re-exports: name to the top-level module it comes from,
/// read from `src/lib.rs`'s `pub use` items.
fn root_reexports() -> BTreeMap<String, String> {
    let lib = strip_comments(&fs::read_to_string(src_dir().join("lib.rs")).unwrap());
    let mut map = BTreeMap::new();
    for item in lib.split(';') {
        let Some(path) = item.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module: String = path
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let names = match path.find('{') {
            Some(open) => path[open + 1..path.rfind('}').unwrap()].to_string(),
            None => path.rsplit("::").next().unwrap().to_string(),
        };
        for name in names.split(',') {
            let name = name.trim().rsplit("::").next().unwrap().trim();
            if !name.is_empty() {
                map.insert(name.to_string(), module.clone());
            }
        }
    }
    map
}

/// Every use of a module of the same or a higher rank, as
/// "file: uses module (rank)" lines.
fn violations() -> Vec<String> {
    let reexports = root_reexports();
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let rel = file.strip_prefix(src_dir()).unwrap().display().to_string();
        let own = rank(&module).unwrap_or_else(|| {
            panic!("src/{rel}: top-level module `{module}` is missing from LAYERS")
        });
        let code = strip_test_items(&strip_comments(&fs::read_to_string(file).unwrap()));
        for name in crate_refs(&code) {
            let target = reexports.get(&name).cloned().unwrap_or(name);
            if target == module {
                continue;
            }
            let Some(theirs) = rank(&target) else {
                found.push(format!(
                    "src/{rel}: uses crate::{target}, which is in no layer"
                ));
                continue;
            };
            if theirs >= own {
                found.push(format!(
                    "src/{rel} (`{module}`, rank {own}) uses `{target}` (rank {theirs})"
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn no_module_uses_a_higher_layer() {
    let found = violations();
    assert!(
        found.is_empty(),
        "layer violations (see LAYERS in tests/layers.rs):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_crate_docs_show_the_same_layers() {
    let lib = fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    // Rows of the docs' table: `//! | rank | [`module`], … | what it owns |`.
    let mut documented: Vec<(u32, String)> = Vec::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let mut cells = row.split('|');
        let Ok(rank) = cells.next().unwrap_or("").trim().parse::<u32>() else {
            continue;
        };
        let modules = cells.next().unwrap_or("");
        for name in modules.split('`').skip(1).step_by(2) {
            let name = name.trim_start_matches("mod@");
            documented.push((rank, name.to_string()));
        }
    }
    let mut expected: Vec<(u32, String)> =
        LAYERS.iter().map(|(r, m)| (*r, m.to_string())).collect();
    documented.sort();
    expected.sort();
    assert_eq!(
        documented, expected,
        "src/lib.rs's layer table differs from LAYERS"
    );
}

#[test]
fn long_files_say_why_they_are_one_piece() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut long = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let lines = text.lines().count();
        let explained = text
            .lines()
            .filter(|l| l.trim_start().starts_with("//!"))
            .any(|l| l.contains("one piece"));
        let rel = file.strip_prefix(src_dir()).unwrap().display().to_string();
        let waiting = NOT_YET_SPLIT.contains(&rel.as_str());
        if lines > MAX_LINES && !explained && !waiting {
            long.push(format!("src/{rel} ({lines} lines)"));
        }
        if waiting && lines <= MAX_LINES {
            long.push(format!("src/{rel} is short now: take it off NOT_YET_SPLIT"));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines whose //! docs do not say why they are one piece:\n{}",
        long.join("\n")
    );
}

/// The scanner itself: the cases the checks above rely on.
#[test]
fn the_scanner_finds_grouped_and_plain_paths() {
    let code = "use crate::{a::B, c, d::{E, F}};\nfn f() { crate::g::h(); }\n\
                // crate::comment\nlet s = \"crate::string\";\n\
                #[cfg(test)]\nmod tests { use crate::t; }\nuse crate::Log;";
    let code = strip_test_items(&strip_comments(code));
    assert_eq!(crate_refs(&code), ["a", "c", "d", "g", "Log"]);
    assert_eq!(root_reexports().get("Log").map(String::as_str), Some("log"));
}
