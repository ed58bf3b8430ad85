//! `cargo xtask release <version> [--dry-run] [--no-verify]`: cuts a
//! release commit and tag.
//!
//! Steps, each printed as it runs (and only printed with `--dry-run`,
//! which changes nothing; the checks of step 1 run either way):
//!
//! 1. checks that the work tree is clean (untracked files included), that
//!    `<version>` is semver, greater than `[workspace.package] version`,
//!    and not yet tagged, and that `CHANGELOG.md` has something under
//!    `## [Unreleased]`;
//! 2. sets `<version>` in the root `Cargo.toml`: `[workspace.package]` and
//!    the `version` of each of our crates in `[workspace.dependencies]`
//!    (the entries with a `path`);
//! 3. moves the Unreleased section of `CHANGELOG.md` under
//!    `## [<version>] - <today, UTC>`, leaving an empty Unreleased above it
//!    (and, where the file has link references, points `[Unreleased]` at
//!    the new tag and adds one for the version);
//! 4. `cargo update --workspace` for each tracked `Cargo.lock` (the root
//!    one, and `fuzz/`'s), so that they name the new version;
//! 5. `cargo package` of every publishable library of the workspace
//!    (`publish` not false in `cargo metadata`; `xtask` and `tests` never),
//!    cargo ordering them and packaging the ones not yet on crates.io from
//!    a local overlay; `--no-verify` skips the build of each package;
//! 6. `git commit -s -m "Release <version>"` with the files it changed;
//! 7. `git tag -a v<version> -m "Release <version>"`.
//!
//! Nothing is pushed or published: it prints the commands that do.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use semver::Version;
use serde_json::Value;

use crate::bench_import::say;
use crate::dist::git;
use crate::{project_root, run_command};

const USAGE: &str = "usage: cargo xtask release <version> [--dry-run] [--no-verify]";

/// What to release, and how.
#[derive(Debug, PartialEq)]
pub(crate) struct Options {
    pub(crate) version: Version,
    pub(crate) dry_run: bool,
    /// Build each package `cargo package` makes (its verification).
    pub(crate) verify: bool,
    /// Where cargo builds, when not its default (tests give a scratch one).
    pub(crate) target_dir: Option<PathBuf>,
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let mut version = None;
    let mut dry_run = false;
    let mut verify = true;
    for arg in args {
        match *arg {
            "--dry-run" => dry_run = true,
            "--no-verify" => verify = false,
            flag if flag.starts_with('-') => bail!("unknown flag {flag}\n{USAGE}"),
            text if version.is_none() => {
                let parsed = Version::parse(text).with_context(|| {
                    format!("{text:?} is not a semver version such as 1.4.0\n{USAGE}")
                })?;
                version = Some(parsed);
            }
            text => bail!("unexpected argument {text:?}\n{USAGE}"),
        }
    }
    Ok(Options {
        version: version.with_context(|| format!("which version?\n{USAGE}"))?,
        dry_run,
        verify,
        target_dir: None,
    })
}

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = parse_args(args)?;
    release(&project_root(), &options, &today())
}

/// Cuts the release in the repository at `root`, dated `date`.
pub(crate) fn release(root: &Path, options: &Options, date: &str) -> anyhow::Result<()> {
    let new = &options.version;
    let tag = format!("v{new}");

    // 1. Checks.
    let status = git(root, &["status", "--porcelain", "--untracked-files=normal"])?;
    ensure!(
        status.is_empty(),
        "the work tree is not clean; commit or remove these first:\n{status}"
    );
    let manifest = read(&root.join("Cargo.toml"))?;
    let current = workspace_version(&manifest)?;
    ensure!(
        new > &current,
        "{new} is not greater than the current version, {current}"
    );
    ensure!(
        git(root, &["tag", "--list", &tag])?.trim().is_empty(),
        "the tag {tag} exists already"
    );
    let (new_manifest, our_crates) = bump_manifest(&manifest, &current, new)?;
    let changelog = read(&root.join("CHANGELOG.md"))?;
    let new_changelog = release_changelog(&changelog, new, date)?;
    let packages = publishable(&workspace_packages(root)?);
    ensure!(
        !packages.is_empty(),
        "no publishable package in the workspace"
    );
    let lockfiles: Vec<String> = git(
        root,
        &["ls-files", "-z", "--", "Cargo.lock", "*/Cargo.lock"],
    )?
    .split('\0')
    .filter(|path| !path.is_empty())
    .map(str::to_owned)
    .collect();

    let mode = if options.dry_run { "would" } else { "will" };
    say(&format!(
        "release {current} -> {new} in {} ({mode} change files, commit and tag)",
        root.display()
    ));

    // 2. and 3. The manifest and the changelog.
    say(&format!(
        "set version {new} in Cargo.toml: [workspace.package] and [workspace.dependencies] {}",
        our_crates.join(", ")
    ));
    for (old_line, new_line) in manifest.lines().zip(new_manifest.lines()) {
        if old_line != new_line {
            say(&format!("  - {old_line}\n  + {new_line}"));
        }
    }
    say(&format!(
        "move CHANGELOG.md's Unreleased section under \"## [{new}] - {date}\""
    ));
    // 4. to 7.
    let mut commands: Vec<Command> = Vec::new();
    for lockfile in &lockfiles {
        let manifest_path = Path::new(lockfile).with_file_name("Cargo.toml");
        let mut command = cargo_in(root, options);
        command
            .args(["update", "--workspace", "--manifest-path"])
            .arg(root.join(manifest_path));
        commands.push(command);
    }
    let mut package = package_command(root, &packages, options.verify);
    if let Some(dir) = &options.target_dir {
        package.env("CARGO_TARGET_DIR", dir);
    }
    commands.push(package);
    let mut add = git_in(root);
    add.args(["add", "--", "Cargo.toml", "CHANGELOG.md"])
        .args(&lockfiles);
    commands.push(add);
    let message = format!("Release {new}");
    let mut commit = git_in(root);
    commit.args(["commit", "--signoff", "--quiet", "-m", &message]);
    commands.push(commit);
    let mut tag_command = git_in(root);
    tag_command.args(["tag", "--annotate", &tag, "-m", &message]);
    commands.push(tag_command);

    if options.dry_run {
        for command in &commands {
            say(&format!("would run {command:?}"));
        }
        say("dry run: nothing was changed");
        return Ok(());
    }

    std::fs::write(root.join("Cargo.toml"), &new_manifest)?;
    std::fs::write(root.join("CHANGELOG.md"), &new_changelog)?;
    for mut command in commands {
        run_command(&mut command).with_context(|| {
            format!(
                "the release stopped; Cargo.toml, CHANGELOG.md and {} may be changed and not \
                 committed: `git diff` shows them, `git checkout -- .` undoes them",
                lockfiles.join(", ")
            )
        })?;
    }
    say(&format!(
        "released {new}: commit {} and tag {tag}. Next:\n  \
         git push origin HEAD {tag}\n  \
         cargo publish --workspace   # {}\n  \
         cargo xtask dist            # the binary's archive (docs/releasing.md)",
        git(root, &["rev-parse", "--short", "HEAD"])?.trim(),
        packages.join(", ")
    ));
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn cargo_in(root: &Path, options: &Options) -> Command {
    let mut command = crate::cargo();
    command.current_dir(root);
    if let Some(dir) = &options.target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    command
}

fn git_in(root: &Path) -> Command {
    let mut command = Command::new("git");
    command.current_dir(root);
    command
}

/// One package of the workspace, as `cargo metadata` describes it.
#[derive(Debug)]
pub(crate) struct Package {
    pub(crate) name: String,
    pub(crate) version: String,
    /// `publish` is not `false` (nor an empty list of registries).
    pub(crate) publish: bool,
}

/// The workspace's own packages (`cargo metadata --no-deps`).
pub(crate) fn workspace_packages(root: &Path) -> anyhow::Result<Vec<Package>> {
    let output = crate::cargo()
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run cargo metadata")?;
    ensure!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    packages_of(&metadata)
}

fn packages_of(metadata: &Value) -> anyhow::Result<Vec<Package>> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata lists no packages")?;
    packages
        .iter()
        .map(|package| {
            let text = |key: &str| {
                package[key]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("a package without {key}: {package}"))
            };
            // null: any registry; a list: those registries ([] for false).
            let publish = match &package["publish"] {
                Value::Null => true,
                Value::Array(registries) => !registries.is_empty(),
                other => bail!("unexpected publish value {other}"),
            };
            Ok(Package {
                name: text("name")?,
                version: text("version")?,
                publish,
            })
        })
        .collect()
}

/// The names of the packages to publish: `publish` not false, and never
/// the automation or the end-to-end tests.
pub(crate) fn publishable(packages: &[Package]) -> Vec<String> {
    let mut names: Vec<String> = packages
        .iter()
        .filter(|package| package.publish && !["xtask", "tests"].contains(&package.name.as_str()))
        .map(|package| package.name.clone())
        .collect();
    names.sort();
    names
}

/// `cargo package` of every publishable package, each verified by a build
/// of its own unless `verify` is false; `cargo xtask ci` runs it so that
/// a release never finds the packaging broken.
pub(crate) fn check_packaging(root: &Path, verify: bool) -> anyhow::Result<()> {
    let packages = publishable(&workspace_packages(root)?);
    ensure!(
        !packages.is_empty(),
        "no publishable package in the workspace"
    );
    run_command(&mut package_command(root, &packages, verify))
}

/// `cargo package` of `packages`, which cargo orders by their
/// dependencies; a package depending on another not yet on crates.io
/// gets it from a local overlay of the ones packaged before it (cargo
/// 1.90 and newer). Uncommitted changes are allowed: `release` packages
/// before it commits.
fn package_command(root: &Path, packages: &[String], verify: bool) -> Command {
    let mut command = crate::cargo();
    command
        .current_dir(root)
        .args(["package", "--locked", "--allow-dirty"]);
    for name in packages {
        command.args(["-p", name]);
    }
    if !verify {
        command.arg("--no-verify");
    }
    command
}

/// The header of the table a TOML line opens (`[workspace.package]`), if
/// it opens one.
fn section_of(line: &str) -> Option<String> {
    let header = line.split('#').next().unwrap_or_default().trim();
    header.starts_with('[').then(|| header.to_owned())
}

/// `[workspace.package] version`.
fn workspace_version(manifest: &str) -> anyhow::Result<Version> {
    let mut section = String::new();
    for line in manifest.lines() {
        if let Some(header) = section_of(line) {
            section = header;
            continue;
        }
        if section == "[workspace.package]"
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "version"
        {
            let text = value.split('#').next().unwrap_or_default();
            let text = text.trim().trim_matches('"');
            return Version::parse(text)
                .with_context(|| format!("[workspace.package] version {text:?} is not semver"));
        }
    }
    bail!("Cargo.toml has no [workspace.package] version")
}

/// The manifest with `new` in place of `current` in `[workspace.package]`
/// and in the `version` of each path dependency of
/// `[workspace.dependencies]`; and the names of those dependencies. Every
/// other byte stays as it was.
fn bump_manifest(
    manifest: &str,
    current: &Version,
    new: &Version,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut section = String::new();
    let mut out = String::with_capacity(manifest.len() + 64);
    let mut crates = Vec::new();
    let mut package_versions = 0;
    for line in manifest.split_inclusive('\n') {
        if let Some(header) = section_of(line) {
            section = header;
            out.push_str(line);
            continue;
        }
        let is_comment = line.trim_start().starts_with('#');
        let mut replaced = line.to_owned();
        if section == "[workspace.package]"
            && !is_comment
            && line
                .split_once('=')
                .is_some_and(|(key, _)| key.trim() == "version")
        {
            replaced = replace_version(line, current, new)
                .with_context(|| format!("[workspace.package]: {}", line.trim()))?;
            package_versions += 1;
        } else if section == "[workspace.dependencies]" && !is_comment && line.contains("path = \"")
        {
            let name = line.split('=').next().unwrap_or_default().trim().to_owned();
            replaced = replace_version(line, current, new)
                .with_context(|| format!("[workspace.dependencies] {name}"))?;
            crates.push(name);
        }
        out.push_str(&replaced);
    }
    ensure!(
        package_versions == 1,
        "Cargo.toml has {package_versions} versions in [workspace.package], not one"
    );
    Ok((out, crates))
}

/// `line` with its `version = "<current>"` set to `new`; an error when the
/// line has no version, or another one.
fn replace_version(line: &str, current: &Version, new: &Version) -> anyhow::Result<String> {
    let mut search_from = 0;
    while let Some(found) = line[search_from..].find("version") {
        let start = search_from + found;
        let before = line[..start].chars().next_back();
        let rest = line[start + "version".len()..].trim_start();
        let at_key = before.is_none_or(|c| c == ' ' || c == '{' || c == ',' || c == '\t');
        if at_key && let Some(value) = rest.strip_prefix('=') {
            let value = value.trim_start();
            let value = value
                .strip_prefix('"')
                .with_context(|| format!("a version that is not a string: {}", line.trim()))?;
            let end = value.find('"').context("an unterminated version string")?;
            let found_version = &value[..end];
            ensure!(
                found_version == current.to_string(),
                "version {found_version:?}, not the workspace's {current}: {}",
                line.trim()
            );
            let value_start = line.len() - value.len();
            return Ok(format!(
                "{}{new}{}",
                &line[..value_start],
                &line[value_start + end..]
            ));
        }
        search_from = start + "version".len();
    }
    bail!("no version: {}", line.trim())
}

/// The changelog with its Unreleased section moved under `## [new] - date`
/// and an empty Unreleased above it. Link references at the end, if any,
/// are kept up to date: `[Unreleased]: …/compare/<last>...HEAD` becomes
/// `…/compare/v<new>...HEAD`, and `[<new>]: …/compare/<last>...v<new>`
/// follows it.
fn release_changelog(changelog: &str, new: &Version, date: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = changelog.lines().collect();
    let heading = lines
        .iter()
        .position(|line| line.trim_end() == "## [Unreleased]")
        .context("CHANGELOG.md has no \"## [Unreleased]\" heading")?;
    ensure!(
        !lines
            .iter()
            .any(|line| line.starts_with(&format!("## [{new}]"))),
        "CHANGELOG.md has a section for {new} already"
    );
    let is_link_reference =
        |line: &str| line.starts_with('[') && line.contains("]: ") && !line.starts_with("[ ");
    let end = lines[heading + 1..]
        .iter()
        .position(|line| line.starts_with("## ") || is_link_reference(line))
        .map_or(lines.len(), |offset| heading + 1 + offset);
    let body = &lines[heading + 1..end];
    let first = body.iter().position(|line| !line.trim().is_empty());
    let last = body.iter().rposition(|line| !line.trim().is_empty());
    let body = match (first, last) {
        (Some(first), Some(last)) => &body[first..=last],
        _ => &[][..],
    };
    ensure!(
        body.iter()
            .any(|line| !line.trim().is_empty() && !line.starts_with('#')),
        "CHANGELOG.md says nothing under \"## [Unreleased]\": nothing to release"
    );

    let mut out: Vec<String> = lines[..heading]
        .iter()
        .map(|line| line.to_string())
        .collect();
    out.push("## [Unreleased]".to_owned());
    out.push(String::new());
    out.push(format!("## [{new}] - {date}"));
    out.push(String::new());
    out.extend(body.iter().map(|line| line.to_string()));
    if end < lines.len() {
        out.push(String::new());
    }
    for line in &lines[end..] {
        match line.strip_prefix("[Unreleased]: ") {
            Some(url) => {
                let (base, last) = url
                    .trim()
                    .strip_suffix("...HEAD")
                    .and_then(|rest| rest.rsplit_once("/compare/"))
                    .with_context(|| {
                        format!(
                            "the [Unreleased] link is not of the form <repository>/compare/<tag>...HEAD: {url}"
                        )
                    })?;
                out.push(format!("[Unreleased]: {base}/compare/v{new}...HEAD"));
                out.push(format!("[{new}]: {base}/compare/{last}...v{new}"));
            }
            None => out.push(line.to_string()),
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    Ok(text)
}

/// Today's date in UTC, `YYYY-MM-DD`.
fn today() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    civil_date(seconds / 86_400)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(days: u64) -> String {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests;
