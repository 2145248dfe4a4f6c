//! The server's layers, read from its source: each top-level module of
//! `src/` may import only the modules below it, so no circle can form.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// What each layer may import. `config` assembles every module's settings;
/// `infra` and `domain` import nothing of ours.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "app",
        &["api", "config", "core", "domain", "infra", "store", "token"],
    ),
    ("config", &["api", "core", "domain", "infra", "store"]),
    ("api", &["core", "domain", "infra", "token"]),
    ("core", &["domain", "infra", "store", "token"]),
    ("token", &["domain"]),
    ("store", &["domain"]),
    ("infra", &[]),
    ("domain", &[]),
    ("fuzz", &["api", "core", "domain", "token"]),
];

/// The top-level modules each file under `src/` names through `crate::`,
/// outside comments and its unit tests.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let top = relative
                .components()
                .next()
                .and_then(|part| part.as_os_str().to_str())
                .expect("a name")
                .trim_end_matches(".rs")
                .to_owned();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            let code: String = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default()
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let named = imports.entry(top.clone()).or_default();
            for used in crate_paths(&code) {
                if used != top {
                    named.insert(used);
                }
            }
        }
    }
    imports
}

/// The first segment of every `crate::` path, in `use crate::{a, b::c}`
/// groups too.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphabetic() || c == '_') => {
                        let name: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.push(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn each_layer_imports_only_the_layers_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    for (module, used) in imports() {
        let may = allowed
            .get(module.as_str())
            .unwrap_or_else(|| panic!("src/{module} is not in the layer table"));
        let wrong: Vec<&String> = used.iter().filter(|u| !may.contains(&u.as_str())).collect();
        assert!(wrong.is_empty(), "{module} imports {wrong:?}");
    }
}

#[test]
fn the_layer_table_has_no_circle() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    fn visit<'a>(
        module: &'a str,
        allowed: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
    ) {
        assert!(!path.contains(&module), "circle: {path:?} -> {module}");
        path.push(module);
        for below in allowed.get(module).copied().unwrap_or_default() {
            visit(below, allowed, path);
        }
        path.pop();
    }
    for module in allowed.keys() {
        visit(module, &allowed, &mut Vec::new());
    }
}
