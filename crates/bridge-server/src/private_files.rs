//! The data dir holds the spool (Braze's events, with user data), the
//! cohort store and the dry-run files (with the project token in every
//! line): they are created readable by their owner only, directories 0700
//! and files 0600, and `serve` warns at start about any it finds looser
//! (an operator's choice is not changed behind their back).
//!
//! SQLite creates a database's `-wal` and `-shm` files with the database
//! file's own permissions, so creating each database file 0600 before
//! SQLite opens it is enough.

use std::path::Path;

/// Creates `dir` (and its parents) 0700 if missing; warns if it exists and
/// others may read it.
pub(crate) fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        return builder.create(dir);
    }
    warn_if_open_to_others(dir, "directory", "0700");
    Ok(())
}

/// Creates the empty file `path` 0600 if missing (its directory must
/// exist); warns if it exists and others may read it.
pub(crate) fn ensure_private_file(path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        return match options.open(path) {
            Ok(_) => Ok(()),
            // Created meanwhile by someone else: fine, it exists.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(error),
        };
    }
    warn_if_open_to_others(path, "file", "0600");
    Ok(())
}

/// Warns when group or others have any permission on `path`.
fn warn_if_open_to_others(path: &Path, kind: &str, wanted: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = %format!("{mode:o}"),
                    "A {kind} of the data dir is open to other users; {wanted} keeps the events, tokens and secrets in it to the bridge's user (chmod {wanted})."
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, kind, wanted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn created_private_and_left_alone_when_present() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = std::env::temp_dir().join(format!("private-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("data").join("spool");
        ensure_private_dir(&dir).unwrap();
        let file = dir.join("spool.db");
        ensure_private_file(&file).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private_file(&file).unwrap();
        assert_eq!(
            mode(&file),
            0o644,
            "an operator's choice is kept (and warned about)"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
