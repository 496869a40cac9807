//! The ledger (see `tfaudit_store::Ledger`): the Merkle tree's rows, checkpoints and
//! verifications.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use tfaudit_store::ledger::{frontier_bytes, frontier_from_bytes, hash_from_bytes};
use tfaudit_store::retention::{decode_seqs, encode_seqs};
use tfaudit_store::{
    Checkpoint, CommitOutcome, Hash, LEAF_PREFIX, Leaf, LeafHash, Ledger, Result, StoreError, TreeHead, TreeNode,
    Verification,
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
        leaves.push(Leaf { index: frontier.size(), seq: *seq, hash: LeafHash::Whole(hash) });
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
/// `tree_leaf_blocks` keeps them (migration 16 uses it); and `tfaudit_seq_at(seqs, i)`:
/// the seq at `i` (from the end when negative) of a list so kept (migration 20).
pub fn register(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("tfaudit_seq_at", 2, flags, |ctx| {
        let seqs = decode_seqs(ctx.get_raw(0).as_blob()?)
            .ok_or_else(|| rusqlite::Error::UserFunctionError("a list of seqs is damaged".into()))?;
        let at: i64 = ctx.get(1)?;
        let i = if at < 0 { seqs.len().checked_sub(at.unsigned_abs() as usize) } else { Some(at as usize) };
        Ok(i.and_then(|i| seqs.get(i).copied()))
    })?;
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

/// The forms of a block. [`WHOLE`]: each leaf's 32-byte hash in turn (as migration 16
/// and tfaudit before schema 19 wrote them). [`PREFIXED`]: a bitmap of the leaves whose
/// whole hash is kept (a bit a leaf, the lowest first; those of events retention
/// removed), then each leaf's whole hash or its [`LEAF_PREFIX`]-byte prefix in turn.
/// An event still in the archive needs only the prefix (see [`LeafHash`]): 10 bytes a
/// leaf instead of 34. Both keep their seqs as [`encode_seqs`] writes them, a byte or
/// so each. [`RUNS`] (schema 23): hashes as [`PREFIXED`], and seqs as runs of
/// consecutive seqs ([`encode_runs`]), a few bytes a block: a row of 480 leaves was
/// 4.4 KB, three to a 16 KB page and a fifth of it empty; it is 3.9 KB, four to a page.
const WHOLE: i64 = 0;
const PREFIXED: i64 = 1;
const RUNS: i64 = 2;

/// Ascending seqs as runs of consecutive ones: for each, how far its first seq is past
/// the end of the run before (from 0) and how many it holds, written as the numbers
/// [`encode_seqs`] writes (it writes the differences of what it is given: here, the
/// running sums of those numbers).
fn encode_runs(seqs: &[i64]) -> Vec<u8> {
    let mut sums = Vec::new();
    let (mut sum, mut end, mut at) = (0i64, 0i64, 0);
    while let Some(&first) = seqs.get(at) {
        let len = seqs[at..].windows(2).take_while(|w| w[1] == w[0].wrapping_add(1)).count() + 1;
        sum = sum.wrapping_add(first.wrapping_sub(end));
        sums.push(sum);
        sum = sum.wrapping_add(len as i64);
        sums.push(sum);
        end = first.wrapping_add(len as i64);
        at += len;
    }
    encode_seqs(&sums)
}

/// [`encode_runs`]' bytes back into seqs (`None`: damaged, or more than a block's).
fn decode_runs(bytes: &[u8]) -> Option<Vec<i64>> {
    let sums = decode_seqs(bytes)?;
    let mut seqs = Vec::new();
    let (mut before, mut end) = (0i64, 0i64);
    for pair in sums.chunks(2) {
        let &[gap_sum, len_sum] = pair else { return None };
        let (gap, len) = (gap_sum.checked_sub(before)?, len_sum.checked_sub(gap_sum)?);
        if gap < 0 || len < 1 || seqs.len() as u64 + len.unsigned_abs() > BLOCK {
            return None;
        }
        let first = end.checked_add(gap)?;
        end = first.checked_add(len)?;
        seqs.extend(first..end);
        before = len_sum;
    }
    Some(seqs)
}

/// A block's `seqs` read, as its form keeps them.
fn block_seq_list(block: u64, seqs: &[u8], form: i64) -> rusqlite::Result<Vec<i64>> {
    let seqs = if form == RUNS { decode_runs(seqs) } else { decode_seqs(seqs) };
    seqs.ok_or_else(|| broken_block(block, "has unreadable seqs"))
}

/// A row of `tree_leaf_blocks` read: its leaves' seqs and hashes, checked to be at most
/// a block's and to account for every byte.
fn decode_block(block: u64, seqs: &[u8], hashes: &[u8], form: i64) -> rusqlite::Result<Vec<(i64, LeafHash)>> {
    let seqs = block_seq_list(block, seqs, form)?;
    if seqs.len() as u64 > BLOCK {
        return Err(broken_block(block, &format!("holds {} seqs (at most {BLOCK})", seqs.len())));
    }
    let n = seqs.len();
    let wrong_length = || broken_block(block, &format!("holds {n} seqs and {} bytes of hashes", hashes.len()));
    match form {
        WHOLE => {
            if hashes.len() != seqs.len() * 32 {
                return Err(wrong_length());
            }
            Ok(seqs
                .into_iter()
                .zip(hashes.chunks_exact(32))
                .map(|(seq, h)| (seq, LeafHash::Whole(h.try_into().expect("32 bytes"))))
                .collect())
        }
        PREFIXED | RUNS => {
            let (bitmap, mut rest) = hashes.split_at_checked(seqs.len().div_ceil(8)).ok_or_else(wrong_length)?;
            let mut leaves = Vec::with_capacity(seqs.len());
            for (i, seq) in seqs.into_iter().enumerate() {
                let width = if bitmap[i / 8] & (1 << (i % 8)) != 0 { 32 } else { LEAF_PREFIX };
                let (h, after) = rest.split_at_checked(width).ok_or_else(wrong_length)?;
                leaves.push((seq, LeafHash::from_bytes(h).expect("a hash or a prefix")));
                rest = after;
            }
            if !rest.is_empty() {
                return Err(wrong_length());
            }
            Ok(leaves)
        }
        other => Err(broken_block(block, &format!("is of form {other}, which this tfaudit does not know"))),
    }
}

/// Leaves as a [`RUNS`] row keeps them: its `seqs` and `hashes`.
fn encode_block(leaves: &[(i64, LeafHash)]) -> (Vec<u8>, Vec<u8>) {
    let seqs: Vec<i64> = leaves.iter().map(|(seq, _)| *seq).collect();
    let mut hashes = vec![0u8; leaves.len().div_ceil(8)];
    for (i, (_, h)) in leaves.iter().enumerate() {
        if h.whole().is_some() {
            hashes[i / 8] |= 1 << (i % 8);
        }
    }
    for (_, h) in leaves {
        hashes.extend_from_slice(h.as_bytes());
    }
    (encode_runs(&seqs), hashes)
}

fn read_block(tx: &rusqlite::Connection, block: u64) -> rusqlite::Result<Option<Vec<(i64, LeafHash)>>> {
    let row: Option<(Vec<u8>, Vec<u8>, i64)> = tx
        .prepare_cached("SELECT seqs, hashes, form FROM tree_leaf_blocks WHERE block = ?1")?
        .query_row([big(block)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(seqs, hashes, form)| decode_block(block, &seqs, &hashes, form)).transpose()
}

fn write_block(tx: &rusqlite::Connection, block: u64, leaves: &[(i64, LeafHash)]) -> rusqlite::Result<()> {
    let (seqs, hashes) = encode_block(leaves);
    tx.prepare_cached("INSERT OR REPLACE INTO tree_leaf_blocks (block, seqs, hashes, form) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![big(block), seqs, hashes, RUNS])?;
    Ok(())
}

/// Appends `leaves` (consecutive indexes from the tree's size) to their blocks, each
/// as its prefix: a block already begun is read and written back whole with the new
/// leaves after its own.
fn write_leaves(tx: &rusqlite::Connection, leaves: &[Leaf]) -> rusqlite::Result<()> {
    let mut rest = leaves;
    while let Some(first) = rest.first() {
        let (block, offset) = (first.index / BLOCK, first.index % BLOCK);
        let (these, next) = rest.split_at(rest.len().min(usize::try_from(BLOCK - offset).unwrap_or(usize::MAX)));
        let mut kept = if offset == 0 {
            Vec::with_capacity(these.len())
        } else {
            read_block(tx, block)?.ok_or_else(|| broken_block(block, "is missing"))?
        };
        if kept.len() as u64 != offset {
            return Err(broken_block(block, &format!("holds {} leaves where the tree has {offset}", kept.len())));
        }
        kept.extend(these.iter().map(|l| (l.seq, l.hash.prefix())));
        write_block(tx, block, &kept)?;
        rest = next;
    }
    Ok(())
}

/// The block holding the leaf of `seq`, if any: leaves are in seq order, so the last
/// block whose first seq is at most `seq`.
fn block_of(tx: &rusqlite::Connection, seq: i64) -> rusqlite::Result<Option<u64>> {
    let Some(last) = tx.query_row("SELECT max(block) FROM tree_leaf_blocks", [], |r| r.get::<_, Option<i64>>(0))?
    else {
        return Ok(None);
    };
    let first_seq = |block: u64| -> rusqlite::Result<Option<i64>> {
        Ok(block_seqs(tx, block)?.and_then(|seqs| seqs.first().copied()))
    };
    // The first block whose first seq is after `seq`; the one before it holds it.
    let (mut lo, mut hi) = (0u64, count(last) + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match first_seq(mid)? {
            Some(s) if s <= seq => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo.checked_sub(1))
}

/// The seqs of a block's leaves, its hashes left unread.
fn block_seqs(tx: &rusqlite::Connection, block: u64) -> rusqlite::Result<Option<Vec<i64>>> {
    let row: Option<(Vec<u8>, i64)> = tx
        .prepare_cached("SELECT seqs, form FROM tree_leaf_blocks WHERE block = ?1")?
        .query_row([big(block)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(seqs, form)| block_seq_list(block, &seqs, form)).transpose()
}

/// How many of the tree's leaves are of seqs up to `seq`: a binary search over the
/// blocks and one block read, however long the tree.
pub(crate) fn leaves_through(tx: &rusqlite::Connection, seq: i64) -> rusqlite::Result<u64> {
    let Some(block) = block_of(tx, seq)? else { return Ok(0) };
    let seqs = block_seqs(tx, block)?.ok_or_else(|| broken_block(block, "is missing"))?;
    Ok(block * BLOCK + seqs.partition_point(|s| *s <= seq) as u64)
}

/// Keeps the whole hash of the leaves of these events (`hashes`: seq and hash, seqs
/// ascending), before retention removes the events: without them, their whole hashes
/// could not be computed again. `Some(why)` when one does not match its kept prefix:
/// the event was changed since it was archived, and nothing is written.
pub(crate) fn keep_whole(tx: &rusqlite::Connection, hashes: &[(i64, Hash)]) -> rusqlite::Result<Option<String>> {
    let (Some(&(first, _)), Some(&(last, _))) = (hashes.first(), hashes.last()) else { return Ok(None) };
    let Some(mut block) = block_of(tx, first)? else {
        return Ok(Some(format!("the tree has no entry for seq {first}")));
    };
    let mut wanted = hashes.iter().peekable();
    let mut changed_blocks = Vec::new();
    while let Some(mut leaves) = read_block(tx, block)? {
        let mut changed = false;
        for (seq, kept) in &mut leaves {
            if let Some((missing, _)) = wanted.next_if(|(s, _)| s < seq) {
                return Ok(Some(format!("the tree has no entry for seq {missing}")));
            }
            if let Some((_, h)) = wanted.next_if(|(s, _)| s == seq) {
                if !kept.matches(h) {
                    return Ok(Some(format!(
                        "the event at seq {seq} differs from what was archived (run `tfaudit verify`)"
                    )));
                }
                *kept = LeafHash::Whole(*h);
                changed = true;
            }
        }
        let done = leaves.last().is_none_or(|(s, _)| *s >= last);
        if changed {
            changed_blocks.push((block, leaves));
        }
        if done {
            break;
        }
        block += 1;
    }
    if let Some((seq, _)) = wanted.next() {
        return Ok(Some(format!("the tree has no entry for seq {seq}")));
    }
    for (block, leaves) in &changed_blocks {
        write_block(tx, *block, leaves)?;
    }
    Ok(None)
}

/// Blocks an older tfaudit wrote (every hash whole, or seqs a byte each) after block
/// `after`, up to `limit` of them, rewritten as [`RUNS`] with prefixes for the events
/// still in the archive; the last block rewritten, `None` when none was left.
pub(crate) fn rewrite_older_blocks(tx: &rusqlite::Connection, after: i64, limit: u64) -> rusqlite::Result<Option<i64>> {
    let blocks: Vec<i64> = tx
        .prepare("SELECT block FROM tree_leaf_blocks WHERE block > ?1 AND form <> ?2 ORDER BY block LIMIT ?3")?
        .query_map(params![after, RUNS, big(limit)], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut present = tx.prepare_cached("SELECT seq FROM events WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq")?;
    for &block in &blocks {
        let block = count(block);
        let mut leaves = read_block(tx, block)?.ok_or_else(|| broken_block(block, "is missing"))?;
        let (Some(&(first, _)), Some(&(last, _))) = (leaves.first(), leaves.last()) else { continue };
        let here: Vec<i64> = present.query_map([first, last], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        for (seq, hash) in &mut leaves {
            if here.binary_search(seq).is_ok() {
                *hash = hash.prefix();
            }
        }
        write_block(tx, block, &leaves)?;
    }
    Ok(blocks.last().copied())
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
            let mut stmt = conn.prepare_cached(
                "SELECT block, seqs, hashes, form FROM tree_leaf_blocks WHERE block >= ?1 ORDER BY block",
            )?;
            let mut rows = stmt.query([big(from / BLOCK)])?;
            let mut leaves = Vec::with_capacity(usize::try_from(limit.min(64 * BLOCK)).unwrap_or(0));
            while (leaves.len() as u64) < limit
                && let Some(r) = rows.next()?
            {
                let block = count(r.get(0)?);
                let kept = decode_block(block, r.get_ref(1)?.as_blob()?, r.get_ref(2)?.as_blob()?, r.get(3)?)?;
                let first = block * BLOCK;
                let skip = usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX);
                for (i, (seq, hash)) in kept.into_iter().enumerate().skip(skip) {
                    if leaves.len() as u64 >= limit {
                        break;
                    }
                    leaves.push(Leaf { index: first + i as u64, seq, hash });
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_block_of_consecutive_seqs_is_a_few_bytes() {
        let seqs: Vec<i64> = (1_000_001..1_000_001 + 480).collect();
        let runs = encode_runs(&seqs);
        assert!(runs.len() <= 6, "{} bytes", runs.len());
        assert_eq!(decode_runs(&runs), Some(seqs));
        assert_eq!(decode_runs(&encode_runs(&[])), Some(Vec::new()));
    }

    #[test]
    fn damaged_runs_are_refused() {
        // A run without its length; a run of none; more seqs than a block holds.
        for sums in [vec![5], vec![5, 5], vec![5, 5 + 481]] {
            assert_eq!(decode_runs(&encode_seqs(&sums)), None, "{sums:?}");
        }
        assert_eq!(decode_runs(&[0x80]), None, "a varint cut short");
    }

    proptest! {
        /// Any ascending seqs, runs or gaps, read back as they were.
        #[test]
        fn runs_read_back_as_written(mut seqs in proptest::collection::vec(1i64..5_000, 0..480)) {
            seqs.sort_unstable();
            seqs.dedup();
            prop_assert_eq!(decode_runs(&encode_runs(&seqs)), Some(seqs));
        }
    }
}
