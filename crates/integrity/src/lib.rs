//! Tamper evidence for the archive.
//!
//! Every stored event becomes a leaf of a Merkle tree over the ingest order (RFC 6962
//! hashing), whose leaf data binds the event's exact original bytes, its organization
//! (the source name) and its `seq`. The tree follows the archive as a consumer does: it
//! is extended, in `seq` order, with the events stored since it was last extended, just
//! before each checkpoint — PostgreSQL commits seqs in order (the seq lock), so the
//! events after the tree's last seq are always whole. A checkpoint is the tree's size
//! and root in the C2SP `tlog-checkpoint` format, signed as a C2SP signed note when a
//! key is given.
//!
//! [`verify`] recomputes the tree from the events and checks every kept and given
//! checkpoint; [`prove`] gives an event's inclusion proof, which [`check_proof`]
//! checks with nothing but the proof and the public key.

pub use tfaudit_store::merkle;
pub mod note;
mod proof;
mod tree;
mod verify;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
pub use merkle::Hash;
pub use note::{Note, NoteError, NoteSigner, NoteVerifier};
pub use proof::{ExportProof, ExportProofWriter, InclusionProof, ProofCheck, check_export_proof, check_proof, prove};
pub use tree::{CheckpointMade, Checkpointer, checkpoint, extend_tree};
pub use verify::{CopyReader, Finding, FindingKind, Report, VerifyOptions, verify};

/// What can go wrong here.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error(transparent)]
    Store(#[from] tfaudit_store::StoreError),
    #[error("{0}")]
    Note(#[from] NoteError),
    /// Input that is not what it should be (a proof file, a checkpoint), with the fix.
    #[error("{0}")]
    Invalid(String),
    /// The event asked for is not in the archive or not yet in a checkpoint.
    #[error("{0}")]
    NotFound(String),
    /// A proof could not be written out.
    #[error("cannot write the proof: {0}")]
    Write(#[from] std::io::Error),
}

pub type Result<T, E = IntegrityError> = std::result::Result<T, E>;

pub use merkle::{event_leaf_hash, new_origin};

/// A checkpoint's body as C2SP `tlog-checkpoint` has it: origin, size, base64 root.
#[must_use]
pub fn checkpoint_text(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// A checkpoint read back: its lines, and the note it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCheckpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub note: Note,
}

impl ParsedCheckpoint {
    /// Reads a checkpoint (signed or not).
    ///
    /// # Errors
    /// When it is not a checkpoint.
    pub fn parse(text: &str) -> Result<Self> {
        let note = Note::parse(text)?;
        let bad = || IntegrityError::Invalid("not a checkpoint: expected origin, tree size and root hash lines".into());
        let mut lines = note.text.lines();
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or_else(bad)?.to_owned();
        let size = lines.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let root = lines
            .next()
            .and_then(|r| B64.decode(r).ok())
            .and_then(|r| <Hash>::try_from(r.as_slice()).ok())
            .ok_or_else(bad)?;
        Ok(Self { origin, size, root, note })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_read_back() {
        let text = checkpoint_text("tfaudit.archive/1", 7, &[3; 32]);
        assert_eq!(text, "tfaudit.archive/1\n7\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n");
        let signer = NoteSigner::from_seed("k", [1; 32]).unwrap();
        let p = ParsedCheckpoint::parse(&signer.sign(&text).unwrap()).unwrap();
        assert_eq!((p.origin.as_str(), p.size, p.root), ("tfaudit.archive/1", 7, [3; 32]));
        assert!(p.note.signed_by(&signer.verifier()));
        assert!(ParsedCheckpoint::parse("hello\n").is_err());
    }
}

/// What `status` and the dashboard show of the archive's integrity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IntegrityStatus {
    /// Events in the tree.
    pub tree_size: u64,
    pub latest_checkpoint: Option<tfaudit_store::Checkpoint>,
    /// The newest `tfaudit verify` and what it found.
    pub last_verification: Option<tfaudit_store::Verification>,
}

/// Reads [`IntegrityStatus`].
///
/// # Errors
/// On a database failure.
pub fn status<S: tfaudit_store::Ledger + ?Sized>(store: &S) -> Result<IntegrityStatus> {
    Ok(IntegrityStatus {
        tree_size: store.tree_head()?.map_or(0, |h| h.size),
        latest_checkpoint: store.latest_checkpoint()?,
        last_verification: store.latest_verification(false)?,
    })
}
