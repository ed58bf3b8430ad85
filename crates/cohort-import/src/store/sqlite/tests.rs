//! Tests of the SQLite membership store: the contract in `store`'s module
//! doc, page by page, through the suite every store runs
//! (`store::conformance`).

use super::*;
use crate::store::conformance::{TestStore, conformance_suite};

impl TestStore for SqliteStore {
    async fn members_of(&self, cohort: &CohortKey) -> Vec<BrazeUser> {
        self.members(cohort).expect("members")
    }

    async fn all_dead_letters(&self) -> Vec<CohortDeadLetter> {
        self.dead_letters(&DeadLetterSelection::default(), usize::MAX)
            .expect("dead letters")
    }

    async fn replay_all_dead_letters(&self) -> u64 {
        self.replay_dead_letters(&DeadLetterSelection::default())
            .expect("replay")
    }
}

async fn open() -> Option<(tempdir::Dir, SqliteStore)> {
    let dir = tempdir::Dir::new();
    let store = SqliteStore::open(&dir.path().join("cohorts.db")).expect("store opens");
    Some((dir, store))
}

async fn reopen(dir: &tempdir::Dir, store: SqliteStore) -> SqliteStore {
    drop(store);
    SqliteStore::open(&dir.path().join("cohorts.db")).expect("store reopens")
}

conformance_suite!(open, reopen);

/// A private temporary directory, removed on drop.
mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(super) struct Dir(PathBuf);

    impl Dir {
        pub(super) fn new() -> Dir {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "cohort-store-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir(path)
        }

        pub(super) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
