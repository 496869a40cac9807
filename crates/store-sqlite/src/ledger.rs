//! The ledger (see `tfaudit_store::Ledger`): the Merkle tree's rows, checkpoints and
//! verifications.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use tfaudit_store::ledger::{frontier_bytes, frontier_from_bytes, hash_from_bytes};
use tfaudit_store::retention::{decode_seqs, encode_seqs};
use tfaudit_store::{
    Checkpoint, CommitOutcome, Hash, Leaf, Ledger, Result, StoreError, TreeHead, TreeNode, Verification,
};

use crate::{SqliteStore, ms, ts};

/// Grows the tree in the transaction that stored a page: the leaves of its new events
/// (`inserted`: seq and original bytes, in seq order), so that a checkpoint after a
/// backfill reads nothing again. Only when the tree has every event stored before the
/// page (`stored_before`: the newest seq then), or the archive was empty; otherwise
/// the next checkpoint's `extend_tree` catches up first.
pub(crate) fn grow(
    tx: &rusqlite::Connection,
    source_id: i64,
    stored_before: i64,
    inserted: &[(i64, &str)],
) -> rusqlite::Result<()> {
    use tfaudit_store::merkle::{Frontier, event_leaf_hash, new_origin};
    if inserted.is_empty() {
        return Ok(());
    }
    let head: Option<(String, i64, i64, Vec<u8>)> = tx
        .query_row("SELECT origin, size, last_seq, frontier FROM tree_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let (origin, size, last_seq, frontier) = head.unwrap_or_else(|| (new_origin(), 0, 0, Vec::new()));
    let Some(mut frontier) = frontier_from_bytes(&frontier).and_then(|f| Frontier::from_parts(count(size), f)) else {
        return Ok(());
    };
    if last_seq != stored_before {
        return Ok(());
    }
    let name: String = tx.query_row("SELECT name FROM sources WHERE id = ?1", [source_id], |r| r.get(0))?;
    let mut completed = Vec::new();
    let mut leaves = Vec::with_capacity(inserted.len());
    for (seq, raw) in inserted {
        let hash = event_leaf_hash(*seq, &name, raw.as_bytes());
        leaves.push(Leaf { index: frontier.size(), seq: *seq, hash });
        frontier.push(hash, &mut completed);
    }
    let last = inserted.last().map_or(last_seq, |(seq, _)| *seq);
    let head = TreeHead { origin, size: frontier.size(), last_seq: last, frontier: frontier.hashes().to_vec() };
    write_tree(tx, &head, &leaves, &completed)
}

/// Leaves a row of `tree_leaf_blocks` holds: leaves `block * BLOCK` on. A row of 480
/// (15.4 KB of hashes, the seqs mostly a byte each) fills one of the archive's 16 KB
/// pages; of 256, each page held one row and was half empty.
const BLOCK: u64 = 480;

/// Adds `tfaudit_encode_seqs(text)`: a comma-separated list of ascending seqs as
/// `tree_leaf_blocks` keeps them (migration 16 uses it).
pub fn register(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("tfaudit_encode_seqs", 1, flags, |ctx| {
        let list = ctx.get::<String>(0)?;
        let seqs = list
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|e| rusqlite::Error::UserFunctionError(format!("a leaf's seq is not a number: {e}").into()))?;
        Ok(encode_seqs(&seqs))
    })
}

fn broken_block(block: u64, why: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Blob,
        format!("the tree's leaves are damaged: block {block} {why}").into(),
    )
}

/// A row of `tree_leaf_blocks` read: its leaves' seqs, checked to be at most a block's
/// and to have a hash each in `hashes`.
fn block_seqs(block: u64, seqs: &[u8], hashes: &[u8]) -> rusqlite::Result<Vec<i64>> {
    let seqs = decode_seqs(seqs).ok_or_else(|| broken_block(block, "has unreadable seqs"))?;
    if seqs.len() as u64 > BLOCK || hashes.len() != seqs.len() * 32 {
        return Err(broken_block(
            block,
            &format!(
                "holds {} seqs and {} bytes of hashes (at most {BLOCK} leaves of 32 bytes)",
                seqs.len(),
                hashes.len()
            ),
        ));
    }
    Ok(seqs)
}

/// Appends `leaves` (consecutive indexes from the tree's size) to their blocks: a block
/// already begun is read and written back whole with the new leaves after its own.
fn write_leaves(tx: &rusqlite::Connection, leaves: &[Leaf]) -> rusqlite::Result<()> {
    let mut rest = leaves;
    while let Some(first) = rest.first() {
        let (block, offset) = (first.index / BLOCK, first.index % BLOCK);
        let (these, next) = rest.split_at(rest.len().min(usize::try_from(BLOCK - offset).unwrap_or(usize::MAX)));
        let (mut seqs, mut hashes) = if offset == 0 {
            (Vec::with_capacity(these.len()), Vec::with_capacity(these.len() * 32))
        } else {
            let (seqs, hashes): (Vec<u8>, Vec<u8>) = tx
                .prepare_cached("SELECT seqs, hashes FROM tree_leaf_blocks WHERE block = ?1")?
                .query_row([big(block)], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or_else(|| broken_block(block, "is missing"))?;
            (block_seqs(block, &seqs, &hashes)?, hashes)
        };
        if seqs.len() as u64 != offset {
            return Err(broken_block(block, &format!("holds {} leaves where the tree has {offset}", seqs.len())));
        }
        for l in these {
            seqs.push(l.seq);
            hashes.extend_from_slice(&l.hash);
        }
        tx.prepare_cached("INSERT OR REPLACE INTO tree_leaf_blocks (block, seqs, hashes) VALUES (?1, ?2, ?3)")?
            .execute(params![big(block), encode_seqs(&seqs), hashes])?;
        rest = next;
    }
    Ok(())
}

/// Adds leaves and kept nodes and moves the head, in the caller's transaction: what
/// both a page's write and [`Ledger::append_tree`] do.
fn write_tree(tx: &rusqlite::Connection, head: &TreeHead, leaves: &[Leaf], nodes: &[TreeNode]) -> rusqlite::Result<()> {
    write_leaves(tx, leaves)?;
    let mut node = tx.prepare_cached("INSERT OR REPLACE INTO tree_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")?;
    for n in nodes {
        node.execute(params![n.level, big(n.index), &n.hash[..]])?;
    }
    tx.execute(
        "INSERT INTO tree_head (id, origin, size, last_seq, frontier, updated_ms) VALUES (1, ?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET origin = excluded.origin, size = excluded.size, last_seq = excluded.last_seq,
             frontier = excluded.frontier, updated_ms = excluded.updated_ms",
        params![head.origin, big(head.size), head.last_seq, frontier_bytes(&head.frontier), ms(Timestamp::now())],
    )?;
    Ok(())
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn damaged(what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, format!("{what} is not a hash").into())
}

fn hash(bytes: &[u8], what: &str) -> rusqlite::Result<Hash> {
    hash_from_bytes(bytes).ok_or_else(|| damaged(what))
}

fn read_checkpoint(r: &rusqlite::Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        id: r.get(0)?,
        size: count(r.get(1)?),
        root: hash(&r.get::<_, Vec<u8>>(2)?, "a checkpoint's root")?,
        note: r.get(3)?,
        signed_by: r.get(4)?,
        made_at: ts(r.get(5)?),
    })
}

const CHECKPOINT: &str = "SELECT id, size, root, note, signed_by, made_ms FROM checkpoints";

fn read_verification(r: &rusqlite::Row<'_>) -> rusqlite::Result<Verification> {
    Ok(Verification {
        at: ts(r.get(0)?),
        size: count(r.get(1)?),
        last_seq: r.get(2)?,
        frontier: frontier_from_bytes(&r.get::<_, Vec<u8>>(3)?).ok_or_else(|| damaged("a verification's frontier"))?,
        finding: r.get(4)?,
        checkpoint_size: r.get::<_, Option<i64>>(5)?.map(count),
    })
}

impl Ledger for SqliteStore {
    fn tree_head(&self) -> Result<Option<TreeHead>> {
        let conn = self.read()?;
        conn.query_row("SELECT origin, size, last_seq, frontier FROM tree_head WHERE id = 1", [], |r| {
            Ok(TreeHead {
                origin: r.get(0)?,
                size: count(r.get(1)?),
                last_seq: r.get(2)?,
                frontier: frontier_from_bytes(&r.get::<_, Vec<u8>>(3)?)
                    .ok_or_else(|| damaged("the tree's frontier"))?,
            })
        })
        .optional()
        .map_err(|e| self.db(e))
    }

    fn append_tree(
        &self,
        old_size: Option<u64>,
        head: &TreeHead,
        leaves: &[Leaf],
        nodes: &[TreeNode],
    ) -> Result<CommitOutcome> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        let current: Option<i64> = tx
            .query_row("SELECT size FROM tree_head WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.db(e))?;
        if current.map(count) != old_size {
            return Ok(CommitOutcome::Conflict);
        }
        write_tree(&tx, head, leaves, nodes).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(CommitOutcome::Committed { new_alerts: 0 })
    }

    fn set_tree_origin(&self, origin: &str) -> Result<bool> {
        let n = self
            .lock()
            .execute(
                "UPDATE tree_head SET origin = ?1 WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM checkpoints)",
                [origin],
            )
            .map_err(|e| self.db(e))?;
        Ok(n == 1)
    }

    fn leaves(&self, from: u64, limit: u64) -> Result<Vec<Leaf>> {
        let conn = self.read()?;
        let read = || -> rusqlite::Result<Vec<Leaf>> {
            let mut stmt = conn
                .prepare_cached("SELECT block, seqs, hashes FROM tree_leaf_blocks WHERE block >= ?1 ORDER BY block")?;
            let mut rows = stmt.query([big(from / BLOCK)])?;
            let mut leaves = Vec::with_capacity(usize::try_from(limit.min(64 * BLOCK)).unwrap_or(0));
            while (leaves.len() as u64) < limit
                && let Some(r) = rows.next()?
            {
                let block = count(r.get(0)?);
                let hashes = r.get_ref(2)?.as_blob()?;
                let seqs = block_seqs(block, r.get_ref(1)?.as_blob()?, hashes)?;
                let first = block * BLOCK;
                let skip = usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX);
                for (i, (seq, h)) in seqs.iter().zip(hashes.chunks_exact(32)).enumerate().skip(skip) {
                    if leaves.len() as u64 >= limit {
                        break;
                    }
                    leaves.push(Leaf { index: first + i as u64, seq: *seq, hash: hash(h, "a leaf")? });
                }
            }
            Ok(leaves)
        };
        read().map_err(|e| self.db(e))
    }

    fn tree_nodes(&self, level: u32, from: u64, limit: u64) -> Result<Vec<TreeNode>> {
        let conn = self.read()?;
        let mut stmt = conn
            .prepare_cached("SELECT idx, hash FROM tree_nodes WHERE level = ?1 AND idx >= ?2 ORDER BY idx LIMIT ?3")
            .map_err(|e| self.db(e))?;
        stmt.query_map(params![level, big(from), big(limit)], |r| {
            Ok(TreeNode { level, index: count(r.get(0)?), hash: hash(&r.get::<_, Vec<u8>>(1)?, "a tree node")? })
        })
        .map_err(|e| self.db(e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| self.db(e))
    }

    fn add_checkpoint(
        &self,
        size: u64,
        root: &Hash,
        note: &str,
        signed_by: Option<&str>,
        made_at: Timestamp,
    ) -> Result<Checkpoint> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO checkpoints (size, root, note, signed_by, made_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![big(size), &root[..], note, signed_by, ms(made_at)],
        )
        .map_err(|e| self.db(e))?;
        let id = conn.last_insert_rowid();
        Ok(Checkpoint {
            id,
            size,
            root: *root,
            note: note.to_owned(),
            signed_by: signed_by.map(str::to_owned),
            made_at: ts(ms(made_at)),
        })
    }

    fn checkpoints(&self, after: i64, limit: u64) -> Result<Vec<Checkpoint>> {
        let conn = self.read()?;
        let mut stmt =
            conn.prepare_cached(&format!("{CHECKPOINT} WHERE id > ?1 ORDER BY id LIMIT ?2")).map_err(|e| self.db(e))?;
        stmt.query_map(params![after, big(limit)], read_checkpoint)
            .map_err(|e| self.db(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.db(e))
    }

    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let conn = self.read()?;
        conn.query_row(&format!("{CHECKPOINT} ORDER BY id DESC LIMIT 1"), [], read_checkpoint)
            .optional()
            .map_err(|e| self.db(e))
    }

    fn record_verification(&self, v: &Verification) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO verifications (at_ms, size, last_seq, frontier, finding, checkpoint_size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    ms(v.at),
                    big(v.size),
                    v.last_seq,
                    frontier_bytes(&v.frontier),
                    v.finding,
                    v.checkpoint_size.map(big)
                ],
            )
            .map(drop)
            .map_err(|e| self.db(e))
    }

    fn latest_verification(&self, clean: bool) -> Result<Option<Verification>> {
        let conn = self.read()?;
        let filter = if clean { "WHERE finding IS NULL" } else { "" };
        conn.query_row(
            &format!(
                "SELECT at_ms, size, last_seq, frontier, finding, checkpoint_size FROM verifications {filter}
                 ORDER BY id DESC LIMIT 1"
            ),
            [],
            read_verification,
        )
        .optional()
        .map_err(|e: rusqlite::Error| -> StoreError { self.db(e) })
    }
}
