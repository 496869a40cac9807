//! The backend conformance suite (`tfaudit-store-conformance`), run against a fresh
//! archive file in a temporary folder for each check.

use tfaudit_store_conformance::Archive;

use crate::{OpenMode, SqliteStore};

fn fresh() -> Archive {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(&dir.path().join("archive.db"), OpenMode::CreateIfMissing).expect("a new archive");
    Archive::new(store).keeping(dir)
}

tfaudit_store_conformance::suite!(fresh);
