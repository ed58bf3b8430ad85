//! Tests of `cargo xtask release`: the edits one by one, then whole
//! releases in scratch clones of this repository.

use super::*;

fn version(text: &str) -> Version {
    Version::parse(text).unwrap()
}

#[test]
fn parses_its_arguments() {
    let options = parse_args(&["1.2.0", "--dry-run"]).unwrap();
    assert_eq!(options.version, version("1.2.0"));
    assert!(options.dry_run && options.verify);
    let options = parse_args(&["--no-verify", "2.0.0-rc.1"]).unwrap();
    assert_eq!(options.version, version("2.0.0-rc.1"));
    assert!(!options.dry_run && !options.verify);
    for bad in [
        &[][..],
        &["v1.2.0"],
        &["1.2"],
        &["1.2.0", "1.3.0"],
        &["1.2.0", "--force"],
    ] {
        assert!(parse_args(bad).is_err(), "{bad:?} accepted");
    }
}

const MANIFEST: &str = r#"[workspace]
members = ["crates/*"]

[workspace.package]
version = "0.1.0"   # the one version
edition = "2024"

[workspace.dependencies]
# Our crates.
currents-model = { path = "crates/currents-model", version = "0.1.0" }
mixpanel-client = { version = "0.1.0", path = "crates/mixpanel-client" }

# version = "0.1.0" in a comment stays.
anyhow = { version = "0.1.0", default-features = false }
serde = "1"
"#;

#[test]
fn bumps_the_workspace_version_and_our_crates_only() {
    let (bumped, crates) = bump_manifest(MANIFEST, &version("0.1.0"), &version("0.2.0")).unwrap();
    assert_eq!(crates, ["currents-model", "mixpanel-client"]);
    let expected = MANIFEST
        .replace(
            "version = \"0.1.0\"   # the one",
            "version = \"0.2.0\"   # the one",
        )
        .replace(
            "crates/currents-model\", version = \"0.1.0\"",
            "crates/currents-model\", version = \"0.2.0\"",
        )
        .replace(
            "{ version = \"0.1.0\", path = \"crates/mixpanel-client\"",
            "{ version = \"0.2.0\", path = \"crates/mixpanel-client\"",
        );
    assert_eq!(bumped, expected);
    assert_eq!(workspace_version(&bumped).unwrap(), version("0.2.0"));
}

#[test]
fn refuses_a_manifest_whose_versions_disagree() {
    let other = MANIFEST.replace(
        "crates/currents-model\", version = \"0.1.0\"",
        "crates/currents-model\", version = \"0.0.9\"",
    );
    assert!(bump_manifest(&other, &version("0.1.0"), &version("0.2.0")).is_err());
    let without = MANIFEST.replace(
        "crates/currents-model\", version = \"0.1.0\"",
        "crates/currents-model\"",
    );
    assert!(bump_manifest(&without, &version("0.1.0"), &version("0.2.0")).is_err());
    let no_package = MANIFEST.replace("[workspace.package]", "[workspace.other]");
    assert!(bump_manifest(&no_package, &version("0.1.0"), &version("0.2.0")).is_err());
    assert!(workspace_version(&no_package).is_err());
}

#[test]
fn bumps_this_repositorys_manifest() {
    let manifest = std::fs::read_to_string(project_root().join("Cargo.toml")).unwrap();
    let current = workspace_version(&manifest).unwrap();
    let next = Version::new(current.major, current.minor + 1, 0);
    let (bumped, crates) = bump_manifest(&manifest, &current, &next).unwrap();
    assert!(crates.contains(&"currents-model".to_owned()), "{crates:?}");
    assert!(crates.contains(&"bridge-server".to_owned()), "{crates:?}");
    let changed = manifest
        .lines()
        .zip(bumped.lines())
        .filter(|(old, new)| old != new)
        .count();
    assert_eq!(changed, crates.len() + 1);
    assert_eq!(manifest.lines().count(), bumped.lines().count());
}

const CHANGELOG: &str = "# Changelog

All notable changes.

## [Unreleased]

### Added

- A thing.
- Another thing.

### Fixed

- A bug.

## [0.1.0] - 2026-01-02

### Added

- The first thing.

[Unreleased]: https://example.invalid/bmb/compare/v0.1.0...HEAD
[0.1.0]: https://example.invalid/bmb/releases/tag/v0.1.0
";

#[test]
fn moves_the_unreleased_section_under_the_version_and_updates_the_links() {
    let released = release_changelog(CHANGELOG, &version("0.2.0"), "2026-03-04").unwrap();
    assert_eq!(
        released,
        "# Changelog

All notable changes.

## [Unreleased]

## [0.2.0] - 2026-03-04

### Added

- A thing.
- Another thing.

### Fixed

- A bug.

## [0.1.0] - 2026-01-02

### Added

- The first thing.

[Unreleased]: https://example.invalid/bmb/compare/v0.2.0...HEAD
[0.2.0]: https://example.invalid/bmb/compare/v0.1.0...v0.2.0
[0.1.0]: https://example.invalid/bmb/releases/tag/v0.1.0
"
    );
}

#[test]
fn moves_a_first_unreleased_section_without_links() {
    let first = "# Changelog\n\n## [Unreleased]\n\n### Added\n\n- Everything.\n";
    assert_eq!(
        release_changelog(first, &version("0.1.0"), "2026-03-04").unwrap(),
        "# Changelog\n\n## [Unreleased]\n\n## [0.1.0] - 2026-03-04\n\n### Added\n\n- Everything.\n"
    );
}

#[test]
fn refuses_a_changelog_with_nothing_to_release() {
    let v = version("0.2.0");
    let empty = "# Changelog\n\n## [Unreleased]\n\n### Added\n\n## [0.1.0] - 2026-01-02\n\n- x\n";
    assert!(release_changelog(empty, &v, "2026-03-04").is_err());
    assert!(release_changelog("# Changelog\n\n- x\n", &v, "2026-03-04").is_err());
    let released = release_changelog(CHANGELOG, &v, "2026-03-04").unwrap();
    assert!(release_changelog(&released, &v, "2026-03-05").is_err());
    let odd_link = CHANGELOG.replace("compare/v0.1.0...HEAD", "commits/main");
    assert!(release_changelog(&odd_link, &v, "2026-03-04").is_err());
}

#[test]
fn releases_this_repositorys_changelog() {
    let changelog = std::fs::read_to_string(project_root().join("CHANGELOG.md")).unwrap();
    let released = release_changelog(&changelog, &version("99.0.0"), "2099-01-01").unwrap();
    assert!(released.contains("## [Unreleased]\n\n## [99.0.0] - 2099-01-01\n\n### Added\n"));
}

#[test]
fn dates_days_since_the_epoch() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(59), "1970-03-01");
    assert_eq!(civil_date(11_016), "2000-02-29");
    assert_eq!(civil_date(11_017), "2000-03-01");
    // `date -u -d @1767225600 +%F`
    assert_eq!(civil_date(1_767_225_600 / 86_400), "2026-01-01");
    assert_eq!(civil_date(1_798_675_200 / 86_400), "2026-12-31");
    let today = today();
    assert_eq!(today.len(), 10, "{today}");
    assert!(today.as_str() > "2026-01-01", "{today}");
}

#[test]
fn publishes_every_package_not_marked_otherwise_but_xtask_and_tests() {
    let metadata = serde_json::json!({"packages": [
        {"name": "b-lib", "version": "0.1.0", "publish": null},
        {"name": "a-lib", "version": "0.1.0", "publish": null},
        {"name": "private", "version": "0.1.0", "publish": []},
        {"name": "internal-registry", "version": "0.1.0", "publish": ["ours"]},
        {"name": "xtask", "version": "0.1.0", "publish": null},
        {"name": "tests", "version": "0.1.0", "publish": null},
    ]});
    let packages = packages_of(&metadata).unwrap();
    assert_eq!(
        publishable(&packages),
        ["a-lib", "b-lib", "internal-registry"]
    );
}

#[test]
fn finds_this_workspaces_publishable_libraries() {
    let names = publishable(&workspace_packages(&project_root()).unwrap());
    for library in [
        "cohort-import",
        "currents-archive",
        "currents-model",
        "mixpanel-client",
    ] {
        assert!(names.contains(&library.to_owned()), "{names:?}");
    }
    for private in ["braze-mixpanel-bridge", "bridge-server", "xtask", "tests"] {
        assert!(!names.contains(&private.to_owned()), "{names:?}");
    }
}

/// A clone of this repository's HEAD in a scratch directory, with a git
/// identity of its own and no signing.
struct Clone {
    dir: PathBuf,
}

impl Clone {
    fn new(name: &str) -> Clone {
        let dir = crate::scratch_dir(name).unwrap();
        let root = project_root();
        let status = Command::new("git")
            .args(["clone", "--quiet", "--no-local"])
            .arg(&root)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        for (key, value) in [
            ("user.name", "Release Test"),
            ("user.email", "release-test@example.invalid"),
            ("commit.gpgsign", "false"),
            ("tag.gpgsign", "false"),
        ] {
            git(&dir, &["config", "--local", key, value]).unwrap();
        }
        Clone { dir }
    }

    fn git(&self, args: &[&str]) -> String {
        git(&self.dir, args).unwrap()
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.dir.join(path)).unwrap()
    }

    fn options(&self, version: Version, dry_run: bool) -> Options {
        Options {
            version,
            dry_run,
            // Packaging, but not its build: that would compile the
            // libraries' dependencies again in the clone's target
            // directory, minutes on 2 cores; `cargo xtask ci` verifies
            // the packages with a build once (`check_packaging`).
            verify: false,
            target_dir: Some(self.dir.join("target")),
        }
    }

    fn next_minor(&self) -> Version {
        let current = workspace_version(&self.read("Cargo.toml")).unwrap();
        Version::new(current.major, current.minor + 1, 0)
    }

    /// Every file git knows of or sees, with its contents; the refs.
    fn snapshot(&self) -> (Vec<(String, String)>, String, String) {
        let mut files = Vec::new();
        for path in self
            .git(&["ls-files", "-z", "--cached", "--others"])
            .split('\0')
            .filter(|path| !path.is_empty())
        {
            let bytes = std::fs::read(self.dir.join(path)).unwrap_or_default();
            files.push((path.to_owned(), crate::dist::sha256_hex(&bytes)));
        }
        (
            files,
            self.git(&["show-ref", "--head"]),
            self.git(&["status", "--porcelain", "--ignored"]),
        )
    }
}

impl Drop for Clone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn releases_in_a_scratch_clone() {
    let clone = Clone::new("release");
    let next = clone.next_minor();
    let before_head = clone.git(&["rev-parse", "HEAD"]);
    let changelog_before = clone.read("CHANGELOG.md");
    let unreleased_body = changelog_before
        .split("## [Unreleased]\n")
        .nth(1)
        .unwrap()
        .split("\n## [")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert!(!unreleased_body.is_empty());

    release(
        &clone.dir,
        &clone.options(next.clone(), false),
        "2031-02-03",
    )
    .unwrap();

    // The manifest, every crate and the lock files.
    let manifest = clone.read("Cargo.toml");
    assert_eq!(workspace_version(&manifest).unwrap(), next);
    for package in workspace_packages(&clone.dir).unwrap() {
        assert_eq!(package.version, next.to_string(), "{}", package.name);
    }
    for name in [
        "currents-model",
        "mixpanel-client",
        "currents-mixpanel",
        "cohort-import",
        "currents-archive",
        "bridge-server",
    ] {
        let entry = manifest
            .lines()
            .find(|line| line.starts_with(&format!("{name} = {{ path = \"crates/{name}\"")))
            .unwrap_or_else(|| panic!("no workspace dependency on {name}: {manifest}"));
        assert!(
            entry.contains(&format!("version = \"{next}\"")),
            "{name}: {entry}"
        );
    }
    for lockfile in ["Cargo.lock", "fuzz/Cargo.lock"] {
        let lock = clone.read(lockfile);
        assert!(
            lock.contains(&format!(
                "name = \"currents-model\"\nversion = \"{next}\"\n"
            )),
            "{lockfile}"
        );
    }
    // The packages were made, at the new version.
    for name in publishable(&workspace_packages(&clone.dir).unwrap()) {
        let crate_file = clone
            .dir
            .join("target/package")
            .join(format!("{name}-{next}.crate"));
        assert!(crate_file.is_file(), "{}", crate_file.display());
    }

    // The changelog.
    let changelog = clone.read("CHANGELOG.md");
    let heading = format!("## [Unreleased]\n\n## [{next}] - 2031-02-03\n\n");
    assert!(changelog.contains(&heading), "{changelog}");
    let released_body = changelog.split(&heading).nth(1).unwrap();
    assert!(released_body.starts_with(&unreleased_body), "{changelog}");

    // One signed-off commit on top, with the files changed, and the tag.
    assert_eq!(clone.git(&["rev-parse", "HEAD~1"]), before_head);
    assert_eq!(
        clone.git(&["log", "-1", "--format=%s"]).trim(),
        format!("Release {next}")
    );
    assert!(
        clone
            .git(&["log", "-1", "--format=%B"])
            .contains("Signed-off-by: Release Test <release-test@example.invalid>")
    );
    let mut changed: Vec<String> = clone
        .git(&["show", "--format=", "--name-only", "HEAD"])
        .lines()
        .map(str::to_owned)
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        [
            "CHANGELOG.md",
            "Cargo.lock",
            "Cargo.toml",
            "fuzz/Cargo.lock"
        ]
    );
    let tag = format!("v{next}");
    assert_eq!(
        clone.git(&["cat-file", "-t", &tag]).trim(),
        "tag",
        "annotated"
    );
    assert_eq!(
        clone.git(&["rev-parse", &format!("{tag}^{{commit}}")]),
        clone.git(&["rev-parse", "HEAD"])
    );
    assert!(
        clone
            .git(&["cat-file", "-p", &tag])
            .contains(&format!("Release {next}"))
    );
    assert_eq!(clone.git(&["status", "--porcelain"]), "");

    // The same version again, or a lower one, is refused.
    assert!(
        release(
            &clone.dir,
            &clone.options(next.clone(), false),
            "2031-02-03"
        )
        .is_err()
    );
    assert!(
        release(
            &clone.dir,
            &clone.options(version("0.0.1"), true),
            "2031-02-03"
        )
        .is_err()
    );
}

#[test]
fn a_dry_run_changes_nothing() {
    let clone = Clone::new("release-dry-run");
    let before = clone.snapshot();
    release(
        &clone.dir,
        &clone.options(clone.next_minor(), true),
        "2031-02-03",
    )
    .unwrap();
    assert_eq!(clone.snapshot(), before);
    assert!(
        !clone.dir.join("target").exists(),
        "nothing was built or packaged"
    );

    // And a dirty tree stops it, dry or not.
    std::fs::write(clone.dir.join("stray.txt"), "x").unwrap();
    let error = release(
        &clone.dir,
        &clone.options(clone.next_minor(), true),
        "2031-02-03",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("not clean") && error.contains("stray.txt"),
        "{error}"
    );
}
