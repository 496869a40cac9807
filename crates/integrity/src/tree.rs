//! Growing the archive's tree and checkpointing it.

use std::time::Duration;

use jiff::Timestamp;
use tfaudit_store::{Archive, Checkpoint, CommitOutcome, Leaf, LeafHash, Ledger, TreeHead};

use crate::merkle::{self, Frontier, Hash, KEPT_LEVELS, Nodes};
use crate::{IntegrityError, NoteSigner, Result, checkpoint_text, event_leaf_hash, new_origin};

/// Events hashed and appended per transaction.
const BATCH: u64 = 5_000;

/// Extends the tree with every event stored since it was last extended, in `seq` order;
/// returns its head (`None`: no event yet and no tree). Several processes may do this
/// at once: each append is compare-and-set on the tree's size, and the loser reads on.
///
/// # Errors
/// On a database failure; what was appended before it stays.
pub fn extend_tree<S: Archive + Ledger + ?Sized>(store: &S, origin: Option<&str>) -> Result<Option<TreeHead>> {
    loop {
        let head = store.tree_head()?;
        let (old_size, mut frontier, origin, after) = match &head {
            Some(h) => (Some(h.size), frontier_of(h)?, h.origin.clone(), h.last_seq),
            None => (None, Frontier::default(), origin.map_or_else(new_origin, str::to_owned), 0),
        };
        let mut leaves = Vec::new();
        let mut completed = Vec::new();
        let mut last_seq = after;
        store.event_bytes_after(after, BATCH, &mut |seq, source, raw| {
            let hash = event_leaf_hash(seq, source, raw.as_bytes());
            leaves.push(Leaf { index: frontier.size(), seq, hash: LeafHash::Whole(hash) });
            frontier.push(hash, &mut completed);
            last_seq = seq;
            Ok(())
        })?;
        if leaves.is_empty() {
            return Ok(head);
        }
        let new = TreeHead { origin, size: frontier.size(), last_seq, frontier: frontier.hashes().to_vec() };
        match store.append_tree(old_size, &new, &leaves, &completed)? {
            CommitOutcome::Committed { .. } if (leaves.len() as u64) < BATCH => return Ok(Some(new)),
            CommitOutcome::Committed { .. } | CommitOutcome::Conflict => {}
        }
    }
}

/// The tree's right edge as its head keeps it.
fn frontier_of(head: &TreeHead) -> Result<Frontier> {
    Frontier::from_parts(head.size, head.frontier.clone()).ok_or_else(|| {
        IntegrityError::Invalid(
            "the archive's tree head is damaged (its frontier does not fit its size); run `tfaudit verify`".into(),
        )
    })
}

/// What [`checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointMade {
    /// A new checkpoint.
    New(Checkpoint),
    /// The latest checkpoint still covers the whole tree and is younger than `every`.
    Current(Checkpoint),
    /// The archive holds no event yet.
    Empty,
}

/// Extends the tree and checkpoints it: a new checkpoint when the tree grew since the
/// latest one, when that one is older than `every` (an hourly checkpoint shows that
/// the archive was there and unchanged), or when `signer` is given and the latest is
/// not signed by it. Signed when `signer` is given; a process without the key (a
/// `sync` run by hand) never adds an unsigned checkpoint beside a current signed one.
///
/// # Errors
/// On a database failure.
pub fn checkpoint<S: Archive + Ledger + ?Sized>(
    store: &S,
    signer: Option<&NoteSigner>,
    origin: Option<&str>,
    every: Duration,
    now: Timestamp,
) -> Result<CheckpointMade> {
    let Some(mut head) = extend_tree(store, origin)? else { return Ok(CheckpointMade::Empty) };
    let latest = store.latest_checkpoint()?;
    // The archive may have begun its tree while storing events, with a name of its
    // own: the configured one replaces it until the first checkpoint fixes it.
    if let Some(o) = origin
        && latest.is_none()
        && head.origin != o
        && store.set_tree_origin(o)?
    {
        head.origin = o.to_owned();
    }
    if let Some(l) = latest
        && l.size == head.size
        && now.duration_since(l.made_at).unsigned_abs() < every
        && (signer.is_none() || signer.map(NoteSigner::name) == l.signed_by.as_deref())
    {
        return Ok(CheckpointMade::Current(l));
    }
    let root = frontier_of(&head)?.root();
    let text = checkpoint_text(&head.origin, head.size, &root);
    let (note, by) = match signer {
        Some(s) => (s.sign(&text)?, Some(s.name())),
        None => (text, None),
    };
    Ok(CheckpointMade::New(store.add_checkpoint(head.size, &root, &note, by, now)?))
}

/// The archive's tree as a source of subtree roots for proofs: leaves and kept nodes,
/// read in ranges.
pub(crate) struct StoreNodes<'a, S: Archive + Ledger + ?Sized> {
    store: &'a S,
    /// The whole leaf hashes of the last groups of `2^KEPT_LEVELS` leaves read (at
    /// most [`GROUPS_KEPT`]): each one's number and hashes. A proof reads its event's
    /// group and, when the tree does not end on a group's edge, the last group; an
    /// export's proofs read the same two for event after event.
    groups: Vec<(u64, Vec<Hash>)>,
}

const GROUPS_KEPT: usize = 4;

impl<'a, S: Archive + Ledger + ?Sized> StoreNodes<'a, S> {
    pub(crate) fn new(store: &'a S) -> Self {
        Self { store, groups: Vec::new() }
    }

    /// The whole leaf hashes of group `g` (leaves `g << KEPT_LEVELS` on; fewer at the
    /// tree's end). Where the archive keeps only a prefix of a leaf's hash, the hash
    /// is computed again from its event, which must match the prefix.
    fn leaf_group(&mut self, g: u64) -> Result<&[Hash]> {
        // The group used last goes to the end; the one used longest ago is dropped.
        if let Some(at) = self.groups.iter().position(|(kept, _)| *kept == g) {
            let group = self.groups.remove(at);
            self.groups.push(group);
        } else {
            let leaves = self.store.leaves(g << KEPT_LEVELS, 1 << KEPT_LEVELS)?;
            let prefixed = || leaves.iter().filter(|l| l.hash.whole().is_none()).map(|l| l.seq);
            let mut computed = std::collections::HashMap::new();
            if let (Some(first), Some(last)) = (prefixed().min(), prefixed().max()) {
                let most = u64::try_from(last - first + 1).unwrap_or(u64::MAX);
                self.store.event_bytes_after(first - 1, most, &mut |seq, source, raw| {
                    if seq <= last {
                        computed.insert(seq, event_leaf_hash(seq, source, raw.as_bytes()));
                    }
                    Ok(())
                })?;
            }
            let hashes = leaves
                .iter()
                .map(|l| match l.hash {
                    LeafHash::Whole(h) => Ok(h),
                    LeafHash::Prefix(_) => match computed.get(&l.seq) {
                        Some(h) if l.hash.matches(h) => Ok(*h),
                        found => Err(IntegrityError::Invalid(format!(
                            "the event at seq {} (entry {} of the tree) {}; run `tfaudit verify`",
                            l.seq,
                            l.index,
                            if found.is_some() {
                                "differs from what was archived"
                            } else {
                                "is no longer in the archive"
                            }
                        ))),
                    },
                })
                .collect::<Result<Vec<Hash>>>()?;
            if self.groups.len() == GROUPS_KEPT {
                self.groups.remove(0);
            }
            self.groups.push((g, hashes));
        }
        Ok(self.groups.last().map_or(&[], |(_, hashes)| hashes.as_slice()))
    }

    /// The hashes at `level` (0: leaves, else a kept level) with index `from..from + n`;
    /// leaves only within one group.
    fn row(&mut self, level: u32, from: u64, n: u64) -> Result<Vec<Hash>> {
        let got: Vec<Hash> = if level == 0 {
            let g = from >> KEPT_LEVELS;
            let start = usize::try_from(from - (g << KEPT_LEVELS)).unwrap_or(usize::MAX);
            let group = self.leaf_group(g)?;
            let end = start.saturating_add(usize::try_from(n).unwrap_or(usize::MAX)).min(group.len());
            group.get(start..end).unwrap_or_default().to_vec()
        } else {
            let nodes = self.store.tree_nodes(level, from, n)?;
            // A kept node missing (never written, or removed) is computed from below.
            if nodes.len() as u64 == n && nodes.iter().enumerate().all(|(i, t)| t.index == from + i as u64) {
                nodes.into_iter().map(|t| t.hash).collect()
            } else {
                (from..from + n).map(|i| self.perfect(level, i)).collect::<Result<_>>()?
            }
        };
        if got.len() as u64 != n {
            return Err(IntegrityError::Invalid(format!(
                "the archive's tree lacks leaves {from}..{}; run `tfaudit verify`",
                from + n
            )));
        }
        Ok(got)
    }
}

impl<S: Archive + Ledger + ?Sized> Nodes for StoreNodes<'_, S> {
    type Error = IntegrityError;

    fn perfect(&mut self, level: u32, index: u64) -> Result<Hash> {
        if level == 0 {
            return Ok(self.row(0, index, 1)?[0]);
        }
        let kept = level - level % KEPT_LEVELS;
        if kept == level {
            if let Some(t) = self.store.tree_nodes(level, index, 1)?.first()
                && t.index == index
            {
                return Ok(t.hash);
            }
            let below = level - KEPT_LEVELS;
            let n = 1u64 << KEPT_LEVELS;
            return Ok(merkle::range_root(&self.row(below, index * n, n)?));
        }
        let n = 1u64 << (level - kept);
        Ok(merkle::range_root(&self.row(kept, index * n, n)?))
    }
}

/// How this instance checkpoints: its key, the origin for a new tree, how often at
/// least, and a directory that keeps a copy of each.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    pub signer: Option<NoteSigner>,
    pub origin: Option<String>,
    pub every: Duration,
    pub dir: Option<std::path::PathBuf>,
    /// Where each new checkpoint is also POSTed (by the caller, which has a client).
    pub webhook: Option<tfaudit_model::Secret>,
}

impl Default for Checkpointer {
    fn default() -> Self {
        Self { signer: None, origin: None, every: Duration::from_secs(3600), dir: None, webhook: None }
    }
}

impl Checkpointer {
    /// [`checkpoint`], then a new checkpoint's copy written to the directory (as
    /// `<size>.checkpoint`, and `latest.checkpoint`, each replaced whole).
    ///
    /// # Errors
    /// On a database failure, or when the copy cannot be written (the checkpoint is
    /// kept in the archive either way).
    pub fn run<S: Archive + Ledger + ?Sized>(&self, store: &S, now: Timestamp) -> Result<CheckpointMade> {
        let made = checkpoint(store, self.signer.as_ref(), self.origin.as_deref(), self.every, now)?;
        if let (CheckpointMade::New(cp), Some(dir)) = (&made, &self.dir) {
            write_copy(dir, &format!("{}.checkpoint", cp.size), &cp.note)?;
            write_copy(dir, "latest.checkpoint", &cp.note)?;
        }
        Ok(made)
    }
}

fn write_copy(dir: &std::path::Path, name: &str, note: &str) -> Result<()> {
    let fail = |e: std::io::Error| {
        IntegrityError::Invalid(format!(
            "cannot write the checkpoint copy to {}: {e}; check [integrity] checkpoint_dir",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::write(&tmp, note).map_err(fail)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(fail)
}
