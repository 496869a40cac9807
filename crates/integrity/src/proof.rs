//! Inclusion proofs: that one event (or every event of an export) is in the archive's
//! tree at a signed checkpoint — checked with nothing but the proof and a public key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tfaudit_store::{Archive, Checkpoint, Ledger, StoredEvent};

use crate::merkle::{self, Hash};
use crate::tree::StoreNodes;
use crate::{IntegrityError, NoteVerifier, ParsedCheckpoint, Result, event_leaf_hash};

/// The format tag of [`InclusionProof`].
pub const PROOF_FORMAT: &str = "tfaudit-inclusion-proof/v1";
/// The format tag of [`ExportProof`].
pub const EXPORT_PROOF_FORMAT: &str = "tfaudit-export-proof/v1";

/// What an auditor is handed for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub format: String,
    /// The event's id (for people; the proof checks `raw`).
    pub event_id: String,
    /// The event's original bytes, exactly as archived.
    pub raw: String,
    /// The organization (source name) it was archived for.
    pub organization: String,
    pub seq: i64,
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Base64 hashes, leaf to root.
    pub audit_path: Vec<String>,
    /// The checkpoint the path leads to, in the signed-note format.
    pub checkpoint: String,
}

/// One exported line's place in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportEntry {
    pub seq: i64,
    pub organization: String,
    pub leaf_index: u64,
    pub audit_path: Vec<String>,
}

/// Written beside an export (`export --with-proof`): for each line of the export, in
/// order, where its event is in the tree of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportProof {
    pub format: String,
    pub tree_size: u64,
    pub checkpoint: String,
    pub events: Vec<ExportEntry>,
}

/// The tree index of the event with this `seq`: leaves are appended in seq order, so a
/// binary search over indexes finds it.
fn leaf_of<S: Ledger + ?Sized>(store: &S, seq: i64, size: u64) -> Result<Option<u64>> {
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let Some(leaf) = store.leaves(mid, 1)?.into_iter().next() else { break };
        match leaf.seq.cmp(&seq) {
            std::cmp::Ordering::Equal => return Ok(Some(leaf.index)),
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Ok(None)
}

fn encode_path(path: &[Hash]) -> Vec<String> {
    path.iter().map(|h| B64.encode(h)).collect()
}

fn decode_path(path: &[String]) -> Result<Vec<Hash>> {
    path.iter()
        .map(|p| {
            B64.decode(p)
                .ok()
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or_else(|| IntegrityError::Invalid(format!("the audit path holds {p:?}, which is not a hash")))
        })
        .collect()
}

/// The checkpoint proofs lead to: the newest.
fn proof_checkpoint<S: Ledger + ?Sized>(store: &S) -> Result<Checkpoint> {
    store.latest_checkpoint()?.ok_or_else(|| {
        IntegrityError::NotFound(
            "the archive has no checkpoint yet; run `tfaudit checkpoint` (watch and serve make one after each sync)"
                .into(),
        )
    })
}

fn entry<S: Archive + Ledger + ?Sized>(
    store: &S,
    nodes: &mut StoreNodes<'_, S>,
    e: &StoredEvent,
    cp: &Checkpoint,
) -> Result<ExportEntry> {
    let index = leaf_of(store, e.seq, cp.size)?.ok_or_else(|| {
        IntegrityError::NotFound(format!(
            "event {} is not in the latest checkpoint yet; run `tfaudit checkpoint` and ask again",
            e.event.id
        ))
    })?;
    let path = merkle::inclusion_proof(nodes, index, cp.size)?;
    Ok(ExportEntry { seq: e.seq, organization: e.source.clone(), leaf_index: index, audit_path: encode_path(&path) })
}

/// The inclusion proof of one event at the newest checkpoint.
///
/// # Errors
/// [`IntegrityError::NotFound`] when there is no such event or it is not checkpointed
/// yet; on a database failure.
pub fn prove<S: Archive + Ledger + ?Sized>(store: &S, event_id: &str) -> Result<InclusionProof> {
    let event = store
        .event(event_id)?
        .ok_or_else(|| IntegrityError::NotFound(format!("no event with id {event_id:?} in the archive")))?;
    let cp = proof_checkpoint(store)?;
    let e = entry(store, &mut StoreNodes::new(store), &event, &cp)?;
    Ok(InclusionProof {
        format: PROOF_FORMAT.into(),
        event_id: event.event.id.clone(),
        raw: event.event.raw.clone(),
        organization: e.organization,
        seq: e.seq,
        leaf_index: e.leaf_index,
        tree_size: cp.size,
        audit_path: e.audit_path,
        checkpoint: cp.note,
    })
}

/// The proof for an export's events ([`ExportProof`]), written as the export is, one
/// event at a time in the export's order, so that an export of any size needs no more
/// memory than one event's proof: the same JSON as an [`ExportProof`] serialized whole.
pub struct ExportProofWriter<'s, S: Archive + Ledger + ?Sized, W: std::io::Write> {
    store: &'s S,
    nodes: StoreNodes<'s, S>,
    checkpoint: Checkpoint,
    out: W,
    events: u64,
}

impl<'s, S: Archive + Ledger + ?Sized, W: std::io::Write> ExportProofWriter<'s, S, W> {
    /// Starts the proof at the newest checkpoint.
    ///
    /// # Errors
    /// [`IntegrityError::NotFound`] when the archive has no checkpoint; on a database
    /// or write failure.
    pub fn start(store: &'s S, mut out: W) -> Result<Self> {
        let checkpoint = proof_checkpoint(store)?;
        // The whole proof with no events, its array left open: ExportProof's own
        // fields in its own order, then the events as they come.
        let empty = ExportProof {
            format: EXPORT_PROOF_FORMAT.into(),
            tree_size: checkpoint.size,
            checkpoint: checkpoint.note.clone(),
            events: Vec::new(),
        };
        let head = serde_json::to_string(&empty).map_err(|e| IntegrityError::Invalid(e.to_string()))?;
        let open = head
            .strip_suffix("]}")
            .ok_or_else(|| IntegrityError::Invalid("an export proof ends with its events".into()))?;
        out.write_all(open.as_bytes())?;
        Ok(Self { store, nodes: StoreNodes::new(store), checkpoint, out, events: 0 })
    }

    /// The checkpoint the proof leads to, in the signed-note format.
    pub fn checkpoint(&self) -> &str {
        &self.checkpoint.note
    }

    /// Adds the next exported event's place in the tree.
    ///
    /// # Errors
    /// As [`prove`]; on a write failure.
    pub fn add(&mut self, e: &StoredEvent) -> Result<()> {
        let entry = entry(self.store, &mut self.nodes, e, &self.checkpoint)?;
        if self.events > 0 {
            self.out.write_all(b",")?;
        }
        let entry = serde_json::to_string(&entry).map_err(|e| IntegrityError::Invalid(e.to_string()))?;
        self.out.write_all(entry.as_bytes())?;
        self.events += 1;
        Ok(())
    }

    /// Ends the proof; the writer, flushed.
    ///
    /// # Errors
    /// On a write failure.
    pub fn finish(mut self) -> Result<W> {
        self.out.write_all(b"]}")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What a proof check established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofCheck {
    pub origin: String,
    pub tree_size: u64,
    /// The key that signed the checkpoint, when one was given and it did.
    pub signed_by: Option<String>,
    /// Events proven.
    pub events: u64,
}

fn open_checkpoint(text: &str, size: u64, key: Option<&NoteVerifier>) -> Result<(ParsedCheckpoint, Option<String>)> {
    let cp = ParsedCheckpoint::parse(text)?;
    if cp.size != size {
        return Err(IntegrityError::Invalid(format!(
            "the proof is for a tree of {size} events but its checkpoint says {}",
            cp.size
        )));
    }
    let signed_by = match key {
        Some(k) if cp.note.signed_by(k) => Some(k.name().to_owned()),
        Some(k) => {
            return Err(IntegrityError::Invalid(format!(
                "the checkpoint is not signed by {}: it was changed, or the key is not this archive's",
                k.encode()
            )));
        }
        None => None,
    };
    Ok((cp, signed_by))
}

fn check_leaf(leaf: &Hash, index: u64, size: u64, path: &[String], root: &Hash, what: &str) -> Result<()> {
    let path = decode_path(path)?;
    if merkle::verify_inclusion(leaf, index, size, &path, root) {
        Ok(())
    } else {
        Err(IntegrityError::Invalid(format!(
            "{what} is not in the checkpointed tree: the event, its place or its audit path was changed"
        )))
    }
}

/// Checks a proof file's text: an [`InclusionProof`], or an [`ExportProof`] together
/// with the export it describes (`export`, the file's bytes).
///
/// # Errors
/// [`IntegrityError::Invalid`] naming what does not hold.
pub fn check_proof(text: &str, key: Option<&NoteVerifier>) -> Result<ProofCheck> {
    let p: InclusionProof = serde_json::from_str(text).map_err(|e| {
        IntegrityError::Invalid(format!("not a tfaudit inclusion proof ({e}); give the JSON `tfaudit prove` printed"))
    })?;
    if p.format != PROOF_FORMAT {
        return Err(IntegrityError::Invalid(format!("unknown proof format {:?}", p.format)));
    }
    let raw_id = serde_json::from_str::<serde_json::Value>(&p.raw)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str().map(str::to_owned)));
    if raw_id.as_deref() != Some(p.event_id.as_str()) {
        return Err(IntegrityError::Invalid(format!(
            "the proof names event {:?} but its event's bytes are of {:?}: it was edited",
            p.event_id,
            raw_id.unwrap_or_default()
        )));
    }
    let (cp, signed_by) = open_checkpoint(&p.checkpoint, p.tree_size, key)?;
    let leaf = event_leaf_hash(p.seq, &p.organization, p.raw.as_bytes());
    check_leaf(&leaf, p.leaf_index, p.tree_size, &p.audit_path, &cp.root, &format!("event {}", p.event_id))?;
    Ok(ProofCheck { origin: cp.origin, tree_size: cp.size, signed_by, events: 1 })
}

/// Checks an export against the proof written beside it: every line, in order.
///
/// # Errors
/// [`IntegrityError::Invalid`] naming the first line that does not hold.
pub fn check_export_proof(proof: &str, export: &[u8], key: Option<&NoteVerifier>) -> Result<ProofCheck> {
    let p: ExportProof = serde_json::from_str(proof)
        .map_err(|e| IntegrityError::Invalid(format!("not a tfaudit export proof ({e})")))?;
    if p.format != EXPORT_PROOF_FORMAT {
        return Err(IntegrityError::Invalid(format!("unknown proof format {:?}", p.format)));
    }
    let (cp, signed_by) = open_checkpoint(&p.checkpoint, p.tree_size, key)?;
    let lines: Vec<&[u8]> = export.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    if lines.len() != p.events.len() {
        return Err(IntegrityError::Invalid(format!(
            "the export has {} lines but its proof covers {}: lines were added or removed",
            lines.len(),
            p.events.len()
        )));
    }
    for (n, (line, e)) in lines.iter().zip(&p.events).enumerate() {
        let leaf = event_leaf_hash(e.seq, &e.organization, line);
        check_leaf(
            &leaf,
            e.leaf_index,
            p.tree_size,
            &e.audit_path,
            &cp.root,
            &format!("line {} of the export", n + 1),
        )?;
    }
    Ok(ProofCheck { origin: cp.origin, tree_size: cp.size, signed_by, events: lines.len() as u64 })
}
