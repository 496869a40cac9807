//! The backend conformance suite (`tfaudit-store-conformance`), run against a fresh
//! database for each check, dropped when the check ends.

use tfaudit_store_conformance::Archive;

use crate::PostgresStore;
use crate::testdb::TestDb;

fn fresh() -> Archive {
    let db = TestDb::new();
    let store = PostgresStore::open(db.url(), false).expect("a new archive");
    Archive::new(store).keeping(db)
}

tfaudit_store_conformance::suite!(fresh);
