//! The scenario on a local directory, opened as a path and as a `file://` URL.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use currents_archive::fixtures::write_objects;
use currents_archive::store::ArchiveStore;

use crate::scenario;

/// A directory under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "currents-archive-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_local_directory_is_listed_pruned_read_and_written() {
    let dir = TempDir::new();
    let root = dir.0.join("currents");
    std::fs::create_dir_all(&root).unwrap();
    write_objects(&root, &scenario::braze_tree("")).unwrap();

    let store = ArchiveStore::open(root.to_str().unwrap()).unwrap();
    assert_eq!(store.prefix(), "");
    scenario::list_and_read(&store).await;
    scenario::write_and_read_batches(&store).await;

    // The same directory as a file:// URL.
    let url = format!("file://{}", root.display());
    let store = ArchiveStore::open(&url).unwrap();
    assert_eq!(store.location(), url);
    let listing = store.list(&Default::default()).await.unwrap();
    assert_eq!(listing.objects.len(), 24 + 3, "the tree and the batches");
}
