//! Cold storage: each finished UTC day of each organization as one Parquet file, in a
//! directory or object storage (S3 and S3-compatible servers, GCS, Azure), with a
//! manifest that says what was pushed.
//!
//! ```text
//! <prefix>/manifest.json
//! <prefix>/organization=<source name>/date=<YYYY-MM-DD>/events.parquet
//! ```
//!
//! The archive is read through the [`tfaudit_store::Archive`] role only, so every
//! backend pushes alike. A push ([`push`]) reads the manifest, works out each
//! organization's finished days ([`days::finished_days`]), skips the days already
//! pushed with the same events ([`Manifest::decide`]), and for every other day writes
//! the day's object first and the manifest after it. Object stores put a single object
//! atomically, so a reader sees either the old or the new manifest, and every object
//! the manifest names is whole; a crash between a day's object and the manifest leaves
//! an object that the manifest does not name (or names with its previous digest), and
//! the next push writes that day again.

mod day_file;
pub mod days;
mod error;
pub mod layout;
mod location;
mod manifest;
mod push;
pub mod retention;

pub use day_file::{COLUMNS, decode_day, encode_day};
pub use error::ColdError;
pub use location::{Location, S3Settings, Target};
pub use manifest::{DayEntry, DayObject, Decision, MANIFEST_FORMAT, Manifest};
pub use push::{DayPushed, PushOptions, PushReport, push};
pub use retention::{
    DayHeld, DayPruned, DayPulled, PruneOptions, PruneReport, PullOptions, PullReport, prune, pull, read_copy,
};
