//! The ledger role: what the archive keeps so that tampering with it shows — the leaves
//! of a Merkle tree over the ingest order, the roots of its larger subtrees, the tree's
//! head, checkpoints (signed tree heads) and the results of verifications. The hashing
//! lives in `tfaudit-integrity`; a backend only keeps rows.

use jiff::Timestamp;
use serde::Serialize;

use crate::{CommitOutcome, Result};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The tree as the last append left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    /// The name of this archive's log, the first line of its checkpoints; chosen once.
    pub origin: String,
    /// How many leaves the tree has.
    pub size: u64,
    /// The `seq` of the last event in the tree (0 for none).
    pub last_seq: i64,
    /// The roots of the tree's perfect subtrees, largest first.
    pub frontier: Vec<Hash>,
}

/// One event's place in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    pub index: u64,
    pub seq: i64,
    pub hash: LeafHash,
}

/// Bytes of a leaf hash kept for an event the archive still holds ([`LeafHash::Prefix`]).
pub const LEAF_PREFIX: usize = 8;

/// A leaf's hash as the archive keeps it. An archive may keep only the first
/// [`LEAF_PREFIX`] bytes for an event it still holds: the whole hash is computed again
/// from the event, and what makes the archive tamper-evident is the signed checkpoints
/// over the whole hashes; the prefix only names which event changed (a change that
/// kept the prefix, one chance in 2^64, is still found by the checkpoints, though not
/// named). An event removed by retention keeps its whole hash, which stands in for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafHash {
    Whole(Hash),
    Prefix([u8; LEAF_PREFIX]),
}

impl LeafHash {
    /// Whether `hash`, computed from an event, is this leaf's.
    #[must_use]
    pub fn matches(&self, hash: &Hash) -> bool {
        match self {
            Self::Whole(h) => h == hash,
            Self::Prefix(p) => p[..] == hash[..LEAF_PREFIX],
        }
    }

    /// The whole hash, when it is kept.
    #[must_use]
    pub fn whole(&self) -> Option<Hash> {
        match self {
            Self::Whole(h) => Some(*h),
            Self::Prefix(_) => None,
        }
    }

    /// The bytes kept: 32, or [`LEAF_PREFIX`].
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Whole(h) => h,
            Self::Prefix(p) => p,
        }
    }

    /// Kept bytes back into a leaf hash (`None` when they are neither a hash nor a
    /// prefix: a damaged row).
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if let Ok(h) = Hash::try_from(bytes) {
            Some(Self::Whole(h))
        } else {
            <[u8; LEAF_PREFIX]>::try_from(bytes).ok().map(Self::Prefix)
        }
    }

    /// The prefix an archive keeps of this hash (itself when it is one).
    #[must_use]
    pub fn prefix(&self) -> Self {
        let mut p = [0; LEAF_PREFIX];
        p.copy_from_slice(&self.as_bytes()[..LEAF_PREFIX]);
        Self::Prefix(p)
    }
}

/// The root of a completed perfect subtree at a kept level (every 8th).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeNode {
    pub level: u32,
    pub index: u64,
    pub hash: Hash,
}

/// A tree head as checkpointed: the note text (signed or not) and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    pub id: i64,
    pub size: u64,
    #[serde(serialize_with = "crate::ledger::hex_hash")]
    pub root: Hash,
    /// The whole checkpoint, in the signed-note format.
    pub note: String,
    /// The key that signed it (`None`: made without a signing key).
    pub signed_by: Option<String>,
    pub made_at: Timestamp,
}

/// What one `tfaudit verify` found, kept so that `status` can say it and `verify --quick`
/// can go on from where a clean one ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub at: Timestamp,
    /// Leaves checked (the tree size it reached).
    pub size: u64,
    /// The `seq` of the last event it checked.
    pub last_seq: i64,
    /// The tree's frontier at `size`, where a quick verification starts.
    #[serde(skip)]
    pub frontier: Vec<Hash>,
    /// The first finding; `None` when everything checked out.
    pub finding: Option<String>,
    /// The latest checkpoint it checked.
    pub checkpoint_size: Option<u64>,
}

impl Verification {
    #[must_use]
    pub fn ok(&self) -> bool {
        self.finding.is_none()
    }
}

pub(crate) fn hex_hash<S: serde::Serializer>(h: &Hash, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(h))
}

/// Frontier hashes as stored: concatenated.
#[must_use]
pub fn frontier_bytes(frontier: &[Hash]) -> Vec<u8> {
    frontier.concat()
}

/// Stored frontier bytes back into hashes (`None` when the length is not a multiple of 32).
#[must_use]
pub fn frontier_from_bytes(bytes: &[u8]) -> Option<Vec<Hash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    Some(bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect())
}

/// A stored hash (`None` when it is not 32 bytes: a damaged row).
#[must_use]
pub fn hash_from_bytes(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

/// The ledger role. Calls block; async callers run them through [`crate::blocking`].
pub trait Ledger: Send + Sync {
    /// The tree's head; `None` before the first append.
    ///
    /// # Errors
    /// On a database failure.
    fn tree_head(&self) -> Result<Option<TreeHead>>;

    /// In one transaction: adds `leaves` (indexes from the old size on) and `nodes`, and
    /// moves the head to `head` — compare-and-set on the old size (`None`: no head yet),
    /// so that of two processes extending the tree at once one wins and the other
    /// reads again ([`CommitOutcome::Conflict`], nothing written).
    ///
    /// # Errors
    /// On a database failure; then nothing was written.
    fn append_tree(
        &self,
        old_size: Option<u64>,
        head: &TreeHead,
        leaves: &[Leaf],
        nodes: &[TreeNode],
    ) -> Result<CommitOutcome>;

    /// Renames the tree's log (the first line of its checkpoints): only while it has
    /// no checkpoint, so that every checkpoint of an archive names the same origin.
    /// Says whether it was renamed.
    ///
    /// # Errors
    /// On a database failure.
    fn set_tree_origin(&self, origin: &str) -> Result<bool>;

    /// Leaves with index `from..`, in index order, at most `limit`.
    ///
    /// # Errors
    /// On a database failure.
    fn leaves(&self, from: u64, limit: u64) -> Result<Vec<Leaf>>;

    /// Kept subtree roots of `level` with index `from..`, in index order, at most `limit`.
    ///
    /// # Errors
    /// On a database failure.
    fn tree_nodes(&self, level: u32, from: u64, limit: u64) -> Result<Vec<TreeNode>>;

    /// Keeps a checkpoint and returns it with its id.
    ///
    /// # Errors
    /// On a database failure.
    fn add_checkpoint(
        &self,
        size: u64,
        root: &Hash,
        note: &str,
        signed_by: Option<&str>,
        made_at: Timestamp,
    ) -> Result<Checkpoint>;

    /// Checkpoints with id after `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// On a database failure.
    fn checkpoints(&self, after: i64, limit: u64) -> Result<Vec<Checkpoint>>;

    /// The newest checkpoint.
    ///
    /// # Errors
    /// On a database failure.
    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>>;

    /// Keeps what a verification found.
    ///
    /// # Errors
    /// On a database failure.
    fn record_verification(&self, v: &Verification) -> Result<()>;

    /// The newest verification; with `clean`, the newest that found nothing.
    ///
    /// # Errors
    /// On a database failure.
    fn latest_verification(&self, clean: bool) -> Result<Option<Verification>>;
}
