//! `cargo xtask dist`: the release archive of `braze-mixpanel-bridge` for
//! the host target, and its SHA-256 sums file.
//!
//! It builds the binary with the release profile, has it generate its man
//! pages and shell completions (`braze-mixpanel-bridge generate`, so they
//! describe the binary shipped), and packs into
//! `<target dir>/dist/braze-mixpanel-bridge-<version>-<target>.tar.gz`
//! (`target/dist/`, or `$CARGO_TARGET_DIR/dist/` when that is set), under a
//! top directory of the same name:
//!
//! ```text
//! braze-mixpanel-bridge                       the binary (0755)
//! README.md  CHANGELOG.md  LICENSE-MIT  LICENSE-APACHE
//! docs/...                                   every tracked file of docs/, bridge.example.toml included
//! deploy/systemd/braze-mixpanel-bridge.service
//! man/braze-mixpanel-bridge.1, man/braze-mixpanel-bridge-<subcommand>.1, ...
//! complete/braze-mixpanel-bridge.bash  complete/_braze-mixpanel-bridge  complete/braze-mixpanel-bridge.fish
//! ```
//!
//! beside `….tar.gz.sha256`, in `sha256sum -c` format. Packing is
//! reproducible: entries sorted by path, every directory listed, modes
//! 0755 (directories, the binary) or 0644, uid and gid 0 with no names,
//! one mtime for all (`SOURCE_DATE_EPOCH`, else the HEAD commit's time), a
//! gzip header without a time or a file name. The same binary and files
//! give the same archive, byte for byte; `docs/releasing.md` says when the
//! binary itself is the same.
//!
//! `cargo xtask dist --check` then runs [`crate::quickstart`] on the
//! archive, as `cargo xtask ci` does.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use sha2::{Digest as _, Sha256};

use crate::bench_import::{say, target_dir};
use crate::{cargo, project_root, run_command};

/// The binary's name, its package's and the archive's first word.
pub(crate) const BIN: &str = "braze-mixpanel-bridge";

/// Files of the repository every archive must hold, whatever else the
/// tracked directories bring.
const REQUIRED_FILES: &[&str] = &[
    "README.md",
    "CHANGELOG.md",
    "LICENSE-MIT",
    "LICENSE-APACHE",
    "docs/bridge.example.toml",
    "docs/configuration.md",
    "docs/releasing.md",
    "deploy/systemd/braze-mixpanel-bridge.service",
];

/// Directories of the repository shipped whole (their tracked files).
const SHIPPED_DIRS: &[&str] = &["docs", "deploy"];

const USAGE: &str = "usage: cargo xtask dist [--check]";

pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let check = match args {
        [] => false,
        ["--check"] => true,
        _ => bail!("{USAGE}"),
    };
    let archive = build()?;
    if check {
        crate::quickstart::run(&archive)?;
    }
    Ok(())
}

/// Builds the release binary and writes the archive and its sums file;
/// the archive's path.
pub(crate) fn build() -> anyhow::Result<PathBuf> {
    let root = project_root();
    let version = crate::release::workspace_packages(&root)?
        .into_iter()
        .find(|package| package.name == BIN)
        .with_context(|| format!("no package {BIN} in the workspace"))?
        .version;
    let target = host_target()?;
    let mtime = source_date_epoch(&root)?;
    run_command(cargo().args(["build", "--release", "--locked", "-p", BIN, "--bin", BIN]))?;
    let binary = target_dir().join("release").join(BIN);

    let top = format!("{BIN}-{version}-{target}");
    let out_dir = target_dir().join("dist");
    let generated = out_dir.join(format!("{top}.generated"));
    let mut files = repository_files(&root)?;
    files.push(File::read(BIN, &binary, true)?);
    files.extend(generated_files(&binary, &generated)?);

    let bytes = pack(&top, &files, mtime)?;
    let path = out_dir.join(format!("{top}.tar.gz"));
    write_atomically(&path, &bytes)?;
    let sums = sums_line(&bytes, &format!("{top}.tar.gz"));
    write_atomically(&sums_path(&path), sums.as_bytes())?;
    std::fs::remove_dir_all(&generated)
        .with_context(|| format!("cannot remove {}", generated.display()))?;
    say(&format!(
        "wrote {} ({:.1} MB, {} entries, mtime {mtime})\nxtask: {}",
        path.display(),
        bytes.len() as f64 / 1e6,
        files.len(),
        sums.trim_end()
    ));
    Ok(path)
}

/// One file of the archive, below its top directory.
#[derive(Clone, Debug)]
pub(crate) struct File {
    /// Relative, `/`-separated.
    pub(crate) path: String,
    pub(crate) contents: Vec<u8>,
    pub(crate) executable: bool,
}

impl File {
    fn read(path: &str, from: &Path, executable: bool) -> anyhow::Result<File> {
        let contents =
            std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
        Ok(File {
            path: path.to_owned(),
            contents,
            executable,
        })
    }
}

/// The host's target triple, as `rustc -vV` names it.
fn host_target() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .context("cannot run rustc -vV")?;
    ensure!(output.status.success(), "rustc -vV failed");
    let text = String::from_utf8(output.stdout)?;
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

/// `SOURCE_DATE_EPOCH` when set, else the committer time of HEAD.
fn source_date_epoch(root: &Path) -> anyhow::Result<u64> {
    if let Some(value) = std::env::var_os("SOURCE_DATE_EPOCH").filter(|value| !value.is_empty()) {
        let value = value.to_string_lossy();
        return value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH is not a number of seconds: {value:?}"));
    }
    let output = git(root, &["log", "-1", "--format=%ct", "HEAD"])?;
    output
        .trim()
        .parse()
        .with_context(|| format!("git log gave no commit time: {output:?}"))
}

/// The output of a git command run in `root`.
pub(crate) fn git(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .with_context(|| format!("cannot run git {}", args.join(" ")))?;
    ensure!(
        output.status.success(),
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The repository's files that ship: the required ones and every tracked
/// file of the shipped directories, read from the working tree.
fn repository_files(root: &Path) -> anyhow::Result<Vec<File>> {
    let mut paths: Vec<String> = REQUIRED_FILES.iter().map(|path| path.to_string()).collect();
    let mut args = vec!["ls-files", "-z", "--"];
    args.extend(SHIPPED_DIRS);
    let tracked = git(root, &args)?;
    paths.extend(
        tracked
            .split('\0')
            .filter(|path| !path.is_empty())
            .map(str::to_owned),
    );
    paths.sort();
    paths.dedup();
    paths
        .iter()
        .map(|path| File::read(path, &root.join(path), false))
        .collect()
}

/// Runs the built binary's `generate` for the man pages (into `dir`) and
/// the three completion scripts.
fn generated_files(binary: &Path, dir: &Path) -> anyhow::Result<Vec<File>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let man_dir = dir.join("man");
    run_command(Command::new(binary).args(["generate", "man"]).arg(&man_dir))?;
    let mut files = Vec::new();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man_dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    ensure!(
        pages.iter().any(|page| page.ends_with(format!("{BIN}.1"))),
        "generate man wrote no {BIN}.1"
    );
    for page in pages {
        let name = page
            .file_name()
            .context("a page without a name")?
            .to_string_lossy()
            .into_owned();
        files.push(File::read(&format!("man/{name}"), &page, false)?);
    }
    for (what, name) in [
        ("complete-bash", format!("{BIN}.bash")),
        ("complete-zsh", format!("_{BIN}")),
        ("complete-fish", format!("{BIN}.fish")),
    ] {
        let output = Command::new(binary)
            .args(["generate", what])
            .output()
            .with_context(|| format!("cannot run {} generate {what}", binary.display()))?;
        ensure!(
            output.status.success() && !output.stdout.is_empty(),
            "{BIN} generate {what} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        files.push(File {
            path: format!("complete/{name}"),
            contents: output.stdout,
            executable: false,
        });
    }
    Ok(files)
}

/// The `.tar.gz` of `files` under the directory `top`, the same bytes for
/// the same arguments: entries in byte order of their paths, each
/// directory listed before what it holds, fixed modes, owner 0:0 without
/// names, `mtime` on every entry, and a gzip header with no time and no
/// name.
pub(crate) fn pack(top: &str, files: &[File], mtime: u64) -> anyhow::Result<Vec<u8>> {
    check_path(top)?;
    ensure!(!top.contains('/'), "the top directory {top:?} holds a '/'");
    // Path → the file, or None for a directory.
    let mut entries: BTreeMap<String, Option<&File>> = BTreeMap::new();
    entries.insert(format!("{top}/"), None);
    for file in files {
        check_path(&file.path)?;
        let mut dir = String::from(top);
        let components: Vec<&str> = file.path.split('/').collect();
        for component in &components[..components.len() - 1] {
            dir = format!("{dir}/{component}");
            ensure!(
                !entries.contains_key(&dir),
                "{dir} is a file and a directory"
            );
            entries.insert(format!("{dir}/"), None);
        }
        let path = format!("{top}/{}", file.path);
        ensure!(
            !entries.contains_key(&format!("{path}/")),
            "{} is a file and a directory",
            file.path
        );
        ensure!(
            entries.insert(path, Some(file)).is_none(),
            "{} is in the archive twice",
            file.path
        );
    }

    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    let mut builder = tar::Builder::new(gzip);
    for (path, file) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        match file {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty())?;
            }
            Some(file) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if file.executable { 0o755 } else { 0o644 });
                header.set_size(file.contents.len() as u64);
                builder.append_data(&mut header, path, file.contents.as_slice())?;
            }
        }
    }
    let gzip = builder.into_inner()?;
    Ok(gzip.finish()?)
}

/// A relative path of plain components.
fn check_path(path: &str) -> anyhow::Result<()> {
    let plain = !path.is_empty()
        && path
            .split('/')
            .all(|component| !component.is_empty() && component != "." && component != "..");
    ensure!(plain, "not a plain relative path: {path:?}");
    Ok(())
}

/// One `sha256sum` line: the digest, two spaces, the file name.
pub(crate) fn sums_line(bytes: &[u8], file_name: &str) -> String {
    format!("{}  {file_name}\n", sha256_hex(bytes))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `<archive>.sha256`.
pub(crate) fn sums_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// Unpacks a `.tar.gz` into `dir`, keeping the modes.
pub(crate) fn unpack(archive: &Path, dir: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.set_preserve_permissions(true);
    tar.unpack(dir)
        .with_context(|| format!("cannot unpack {} into {}", archive.display(), dir.display()))
}

/// Writes `path` through a temporary file beside it and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a path without a directory")?;
    std::fs::create_dir_all(dir)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| {
        format!(
            "cannot rename {} to {}",
            temporary.display(),
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry of a `.tar.gz`, as read back.
    struct Listed {
        path: String,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        contents: Vec<u8>,
    }

    /// Every entry of a `.tar.gz`, in order.
    fn list(bytes: &[u8]) -> Vec<Listed> {
        use std::io::Read as _;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        tar.entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let header = entry.header().clone();
                let mut contents = Vec::new();
                entry.read_to_end(&mut contents).unwrap();
                Listed {
                    path: entry.path().unwrap().to_string_lossy().into_owned(),
                    kind: header.entry_type(),
                    mode: header.mode().unwrap(),
                    uid: header.uid().unwrap(),
                    gid: header.gid().unwrap(),
                    mtime: header.mtime().unwrap(),
                    contents,
                }
            })
            .collect()
    }

    fn file(path: &str, contents: &[u8], executable: bool) -> File {
        File {
            path: path.to_owned(),
            contents: contents.to_vec(),
            executable,
        }
    }

    /// A fake release: a "binary" of pseudo-random bytes (so that it does
    /// not compress to nothing), docs at two depths, a path over the 100
    /// bytes of a tar header's name field.
    fn fake_files() -> Vec<File> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let binary: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        vec![
            file("docs/specs/ingest.md", b"# Ingest\n", false),
            file(BIN, &binary, true),
            file("README.md", b"# readme\n", false),
            file("docs/configuration.md", b"# Configuration\n", false),
            file(
                &format!(
                    "man/{}.1",
                    "braze-mixpanel-bridge-a-rather-long-subcommand-name".repeat(2)
                ),
                b".TH x 1\n",
                false,
            ),
            file(
                "docs/bridge.example.toml",
                b"listen = \"127.0.0.1:8080\"\n",
                false,
            ),
        ]
    }

    const TOP: &str = "braze-mixpanel-bridge-1.2.3-x86_64-unknown-linux-gnu";

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let files = fake_files();
        let first = pack(TOP, &files, 1_700_000_000).unwrap();
        let mut reversed = files.clone();
        reversed.reverse();
        let second = pack(TOP, &reversed, 1_700_000_000).unwrap();
        assert_eq!(sha256_hex(&first), sha256_hex(&second));
        assert_eq!(first, second);
        // And what goes in shows: another mtime, mode or byte changes it.
        assert_ne!(first, pack(TOP, &files, 1_700_000_001).unwrap());
        let mut not_executable = files.clone();
        not_executable[1].executable = false;
        assert_ne!(first, pack(TOP, &not_executable, 1_700_000_000).unwrap());
        let mut edited = files.clone();
        edited[2].contents = b"# readme!\n".to_vec();
        assert_ne!(first, pack(TOP, &edited, 1_700_000_000).unwrap());
    }

    #[test]
    fn the_gzip_header_has_no_time_and_no_name() {
        let bytes = pack(TOP, &fake_files(), 1_700_000_000).unwrap();
        assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(bytes[3], 0, "no flags: no name, comment or extra field");
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "no modification time");
    }

    #[test]
    fn entries_are_sorted_with_fixed_owner_modes_and_time() {
        let files = fake_files();
        let entries = list(&pack(TOP, &files, 1_700_000_000).unwrap());
        let paths: Vec<&str> = entries.iter().map(|entry| entry.path.as_str()).collect();
        let long_page = format!(
            "{TOP}/man/{}.1",
            "braze-mixpanel-bridge-a-rather-long-subcommand-name".repeat(2)
        );
        let expected = [
            format!("{TOP}/"),
            format!("{TOP}/README.md"),
            format!("{TOP}/braze-mixpanel-bridge"),
            format!("{TOP}/docs/"),
            format!("{TOP}/docs/bridge.example.toml"),
            format!("{TOP}/docs/configuration.md"),
            format!("{TOP}/docs/specs/"),
            format!("{TOP}/docs/specs/ingest.md"),
            format!("{TOP}/man/"),
            long_page,
        ];
        assert_eq!(paths, expected);
        for entry in &entries {
            let path = &entry.path;
            assert_eq!(
                (entry.uid, entry.gid, entry.mtime),
                (0, 0, 1_700_000_000),
                "{path}"
            );
            if entry.kind.is_dir() {
                assert_eq!(entry.mode, 0o755, "{path}");
            } else {
                assert!(entry.kind.is_file(), "{path}");
                let name = path.strip_prefix(&format!("{TOP}/")).unwrap();
                let original = files.iter().find(|file| file.path == name).unwrap();
                assert_eq!(entry.contents, original.contents, "{path}");
                let mode_wanted = if name == BIN { 0o755 } else { 0o644 };
                assert_eq!(entry.mode, mode_wanted, "{path}");
            }
        }
    }

    #[test]
    fn refuses_odd_paths() {
        for bad in ["", "/etc/passwd", "docs/../../x", "docs//x", "./x", "docs/"] {
            assert!(
                pack(TOP, &[file(bad, b"x", false)], 0).is_err(),
                "{bad:?} accepted"
            );
        }
        let twice = [file("a", b"1", false), file("a", b"2", false)];
        assert!(pack(TOP, &twice, 0).is_err());
        let file_and_dir = [file("a", b"1", false), file("a/b", b"2", false)];
        assert!(pack(TOP, &file_and_dir, 0).is_err());
        let dir_and_file = [file("a/b", b"1", false), file("a", b"2", false)];
        assert!(pack(TOP, &dir_and_file, 0).is_err());
        assert!(pack("a/b", &fake_files(), 0).is_err());
    }

    #[test]
    fn unpacks_what_it_packs_with_the_modes() {
        let dir = crate::scratch_dir("dist-unpack").unwrap();
        let archive = dir.join("a.tar.gz");
        std::fs::write(&archive, pack(TOP, &fake_files(), 1_700_000_000).unwrap()).unwrap();
        unpack(&archive, &dir).unwrap();
        let binary = dir.join(TOP).join(BIN);
        let long_page = dir.join(TOP).join("man").join(format!(
            "{}.1",
            "braze-mixpanel-bridge-a-rather-long-subcommand-name".repeat(2)
        ));
        assert_eq!(std::fs::read(&long_page).unwrap(), b".TH x 1\n");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&binary), 0o755);
        assert_eq!(mode(&dir.join(TOP).join("README.md")), 0o644);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `deploy/systemd/braze-mixpanel-bridge.service`'s `[Service]`
    /// settings, in order (a key may repeat).
    fn unit_settings() -> (String, Vec<(String, String)>) {
        let text = std::fs::read_to_string(project_root().join(UNIT)).unwrap();
        let mut section = String::new();
        let mut settings = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                section = line.to_owned();
            } else if section == "[Service]" {
                let (key, value) = line.split_once('=').unwrap();
                settings.push((key.to_owned(), value.to_owned()));
            }
        }
        (text, settings)
    }

    const UNIT: &str = "deploy/systemd/braze-mixpanel-bridge.service";

    #[test]
    fn the_systemd_unit_is_sandboxed() {
        let (text, settings) = unit_settings();
        let values = |key: &str| -> Vec<&str> {
            settings
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, value)| value.as_str())
                .collect()
        };
        let value = |key: &str| -> &str {
            let found = values(key);
            assert_eq!(found.len(), 1, "{key}: {found:?}");
            found[0]
        };
        for (key, wanted) in [
            ("DynamicUser", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("CapabilityBoundingSet", ""),
            ("AmbientCapabilities", ""),
            ("StateDirectory", "braze-mixpanel-bridge"),
            ("StateDirectoryMode", "0700"),
            ("ConfigurationDirectory", "braze-mixpanel-bridge"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("Restart", "on-failure"),
            ("UMask", "0077"),
        ] {
            assert_eq!(value(key), wanted, "{key}");
        }
        assert_eq!(
            values("SystemCallFilter"),
            ["@system-service", "~@privileged @resources"]
        );
        // serve keeps 256 descriptors for itself below ingest.max_connections
        // (8,192 by default).
        let nofile: u64 = value("LimitNOFILE").parse().unwrap();
        assert!(nofile >= 8192 + 256, "{nofile}");
        assert_eq!(
            value("ExecStart"),
            "/usr/local/bin/braze-mixpanel-bridge serve --config %E/braze-mixpanel-bridge/bridge.toml"
        );

        // Every variable it sets is one the configuration documents; the
        // data dir is the state directory; each *_FILE names a credential
        // the unit loads.
        let configuration =
            std::fs::read_to_string(project_root().join("docs/configuration.md")).unwrap();
        let credentials: Vec<&str> = values("LoadCredential")
            .iter()
            .map(|credential| credential.split(':').next().unwrap())
            .collect();
        assert!(credentials.contains(&"currents-tokens"), "{credentials:?}");
        for environment in values("Environment") {
            let (name, setting) = environment.split_once('=').unwrap();
            assert!(configuration.contains(&format!("`{name}`")), "{name}");
            if name == "BRIDGE_DATA_DIR" {
                assert_eq!(setting, "%S/braze-mixpanel-bridge");
            } else if name.ends_with("_FILE") {
                let credential = setting.strip_prefix("%d/").unwrap();
                assert!(credentials.contains(&credential), "{name}");
            }
        }

        // systemd's own checks, where systemd is installed: no warning
        // from `verify` (unknown keys, bad values), and an exposure of 2.0
        // or less ("OK"; 1.1 when written) from `security`, whose
        // threshold counts tenths. `verify` wants ExecStart to exist, so
        // it gets this test's own executable.
        let Ok(analyze) = Command::new("systemd-analyze").arg("--version").output() else {
            return;
        };
        if !analyze.status.success() {
            return;
        }
        let dir = crate::scratch_dir("systemd-unit").unwrap();
        let unit = dir.join("braze-mixpanel-bridge.service");
        let executable = std::env::current_exe().unwrap();
        let text = text.replace(
            "/usr/local/bin/braze-mixpanel-bridge",
            executable.to_str().unwrap(),
        );
        std::fs::write(&unit, text).unwrap();
        let verify = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        let complaints = String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && complaints.trim().is_empty(),
            "{complaints}"
        );
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20"])
            .arg(&unit)
            .output()
            .unwrap();
        assert!(
            security.status.success(),
            "{}",
            String::from_utf8_lossy(&security.stdout)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sums_lines_are_what_sha256sum_writes() {
        // `printf abc | sha256sum`
        assert_eq!(
            sums_line(b"abc", "x.tar.gz"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  x.tar.gz\n"
        );
        assert_eq!(
            sums_path(Path::new("/t/dist/x.tar.gz")),
            Path::new("/t/dist/x.tar.gz.sha256")
        );
    }
}
