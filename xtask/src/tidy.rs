//! `cargo xtask tidy`: repository hygiene that review should not have to catch.
//!
//! It also runs as a `#[test]`, so `cargo test` enforces it. Checks:
//! - every `.rs` file under `crates/*/src` starts with a `//!` module doc;
//! - no stub macros or to-do markers in crate sources;
//! - no trailing whitespace in sources and docs;
//! - each crate's directory name equals its package name;
//! - dependency edges between our crates follow `docs/architecture.md`;
//! - every crate is named in `docs/architecture.md`;
//! - every `BRIDGE_*`, `MIXPANEL_*` and `BRAZE_*` variable named in the
//!   bridge-server config module (tests aside) appears in
//!   `docs/configuration.md`.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};

use crate::project_root;

/// Which of our crates each crate may depend on (normal dependencies).
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("currents-model", &[]),
    ("mixpanel-client", &[]),
    ("currents-mixpanel", &["currents-model", "mixpanel-client"]),
    ("cohort-import", &["mixpanel-client"]),
    ("currents-archive", &["currents-model"]),
    (
        "bridge-server",
        &[
            "currents-model",
            "mixpanel-client",
            "currents-mixpanel",
            "cohort-import",
        ],
    ),
    (
        "braze-mixpanel-bridge",
        &[
            "currents-model",
            "mixpanel-client",
            "currents-mixpanel",
            "bridge-server",
            "cohort-import",
        ],
    ),
];

pub(crate) fn run() -> anyhow::Result<()> {
    let problems = find_problems()?;
    ensure!(
        problems.is_empty(),
        "tidy found {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    Ok(())
}

fn find_problems() -> anyhow::Result<Vec<String>> {
    let root = project_root();
    let mut problems = Vec::new();
    let architecture = std::fs::read_to_string(root.join("docs/architecture.md"))
        .context("cannot read docs/architecture.md")?;
    let crate_names: Vec<String> = our_crates(&root)?;
    for crate_dir in crate_dirs(&root)? {
        let dir_name = file_name(&crate_dir);
        let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml"))
            .with_context(|| format!("cannot read {}/Cargo.toml", crate_dir.display()))?;
        let package_name = package_name(&manifest).unwrap_or_default();
        if package_name != dir_name {
            problems.push(format!(
                "crates/{dir_name}: package name {package_name:?} differs from its directory"
            ));
        }
        if !architecture.contains(&format!("`{dir_name}`")) {
            problems.push(format!(
                "docs/architecture.md does not describe crate `{dir_name}`"
            ));
        }
        let allowed = ALLOWED_EDGES
            .iter()
            .find(|(name, _)| *name == dir_name)
            .map(|(_, allowed)| *allowed);
        match allowed {
            None => problems.push(format!(
                "crates/{dir_name}: no dependency rule in xtask/src/tidy.rs"
            )),
            Some(allowed) => {
                for dependency in normal_dependencies(&manifest) {
                    if crate_names.contains(&dependency) && !allowed.contains(&dependency.as_str())
                    {
                        problems.push(format!("crates/{dir_name} must not depend on {dependency}"));
                    }
                }
            }
        }
        for source in rust_files(&crate_dir.join("src"))? {
            let text = std::fs::read_to_string(&source)?;
            let relative = source.strip_prefix(&root).unwrap_or(&source).display();
            let first_code_line = text
                .lines()
                .find(|line| !line.trim().is_empty() && !line.starts_with("// "));
            if !first_code_line.is_some_and(|line| line.starts_with("//!")) {
                problems.push(format!("{relative}: missing a `//!` module doc"));
            }
            for (line_idx, line) in text.lines().enumerate() {
                for marker in FORBIDDEN_MARKERS {
                    if line.contains(marker) {
                        problems.push(format!("{relative}:{}: contains {marker}", line_idx + 1));
                    }
                }
            }
        }
    }
    problems.extend(undocumented_variables(&root)?);
    for file in text_files(&root)? {
        let text = std::fs::read_to_string(&file)?;
        let relative = file.strip_prefix(&root).unwrap_or(&file).display();
        for (line_idx, line) in text.lines().enumerate() {
            if line.ends_with(' ') || line.ends_with('\t') {
                problems.push(format!("{relative}:{}: trailing whitespace", line_idx + 1));
            }
        }
    }
    Ok(problems)
}

/// Markers of unfinished work. Spelled in pieces so this file passes itself.
const FORBIDDEN_MARKERS: &[&str] = &[
    concat!("to", "do!("),
    concat!("unimple", "mented!("),
    concat!("db", "g!("),
    concat!("TO", "DO"),
];

/// Variables the configuration reads that `docs/configuration.md` does not name.
fn undocumented_variables(root: &Path) -> anyhow::Result<Vec<String>> {
    let src = root.join("crates/bridge-server/src");
    let mut sources = rust_files(&src.join("config"))?;
    sources.push(src.join("config.rs"));
    sources.retain(|path| path.exists() && file_name(path) != "tests.rs");
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let docs = std::fs::read_to_string(root.join("docs/configuration.md"))
        .context("cannot read docs/configuration.md")?;
    let mut problems = Vec::new();
    for source in sources {
        let text = std::fs::read_to_string(&source)?;
        let relative = source.strip_prefix(root).unwrap_or(&source).display();
        for variable in variable_names(&text) {
            if !docs.contains(variable) {
                problems.push(format!(
                    "{relative}: {variable} is not documented in docs/configuration.md"
                ));
            }
        }
    }
    Ok(problems)
}

/// The prefixes of the variables the configuration reads.
const VARIABLE_PREFIXES: [&str; 3] = ["BRIDGE_", "MIXPANEL_", "BRAZE_"];

/// Words starting with `BRIDGE_`, `MIXPANEL_` or `BRAZE_`, made of `A-Z`,
/// `0-9` and `_`.
fn variable_names(text: &str) -> Vec<&str> {
    let is_name_char = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    let mut names = Vec::new();
    for (start, _) in text.match_indices(['B', 'M']) {
        let rest = &text[start..];
        let at_word_start = !text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let is_variable = VARIABLE_PREFIXES
            .iter()
            .any(|prefix| rest.starts_with(prefix));
        if !at_word_start || !is_variable {
            continue;
        }
        let len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
        if !names.contains(&&rest[..len]) {
            names.push(&rest[..len]);
        }
    }
    names
}

fn crate_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root.join("crates"))? {
        let path = entry?.path();
        if path.join("Cargo.toml").exists() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn our_crates(root: &Path) -> anyhow::Result<Vec<String>> {
    Ok(crate_dirs(root)?.iter().map(|dir| file_name(dir)).collect())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn package_name(manifest: &str) -> Option<String> {
    let package = manifest.split("[package]").nth(1)?;
    let line = package
        .lines()
        .find(|line| line.trim_start().starts_with("name"))?;
    Some(line.split('"').nth(1)?.to_string())
}

/// Names under `[dependencies]` (not dev- or build-dependencies).
fn normal_dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_dependencies = trimmed == "[dependencies]";
            continue;
        }
        if in_dependencies && let Some((name, _)) = trimmed.split_once('=') {
            let name = name.trim().trim_end_matches(".workspace").trim();
            if !name.is_empty() && !name.starts_with('#') {
                names.push(name.to_string());
            }
        }
    }
    names
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(dir, &mut |path| {
        if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path.to_path_buf());
        }
    })?;
    Ok(files)
}

fn text_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for top in ["crates", "xtask", "tests", "docs"] {
        walk(&root.join(top), &mut |path| {
            let is_text = path
                .extension()
                .is_some_and(|ext| ext == "rs" || ext == "md" || ext == "toml");
            if is_text {
                files.push(path.to_path_buf());
            }
        })?;
    }
    for file in ["README.md", "Cargo.toml"] {
        files.push(root.join(file));
    }
    Ok(files)
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if file_name(&path) != "target" {
                walk(&path, visit)?;
            }
        } else {
            visit(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy() {
        if let Err(error) = super::run() {
            panic!("{error:#}");
        }
    }

    #[test]
    fn variable_names() {
        let text = "(\"BRIDGE_LISTEN\", MIXPANEL_API_URL) XBRIDGE_NOT \"BRIDGE_PROJECT_<NAME>\" MIXPANEL_ BRAZE_REST_API_KEY_FILE XBRAZE_NOT BRAZEN BRAZE_";
        assert_eq!(
            super::variable_names(text),
            [
                "BRIDGE_LISTEN",
                "MIXPANEL_API_URL",
                "BRIDGE_PROJECT_",
                "MIXPANEL_",
                "BRAZE_REST_API_KEY_FILE",
                "BRAZE_"
            ]
        );
    }
}
