//! The ledger (see `tfaudit_store::Ledger`): the Merkle tree's rows, checkpoints and
//! verifications.

use jiff::Timestamp;
use tfaudit_store::ledger::{frontier_bytes, frontier_from_bytes, hash_from_bytes};
use tfaudit_store::{
    Checkpoint, CommitOutcome, Hash, Leaf, LeafHash, Ledger, Result, StoreError, TreeHead, TreeNode, Verification,
};

use crate::{PostgresStore, big, count, ms, nul_free, ts};

fn damaged(what: &str) -> StoreError {
    StoreError::Database(format!("{what} in the archive is not a hash: the ledger is damaged"))
}

fn hash(bytes: &[u8], what: &str) -> Result<Hash> {
    hash_from_bytes(bytes).ok_or_else(|| damaged(what))
}

const CHECKPOINT: &str = "SELECT id, size, root, note, signed_by, made_ms FROM checkpoints";

fn read_checkpoint(r: &postgres::Row) -> Result<Checkpoint> {
    Ok(Checkpoint {
        id: r.get(0),
        size: count(r.get(1)),
        root: hash(r.get(2), "a checkpoint's root")?,
        note: r.get(3),
        signed_by: r.get(4),
        made_at: ts(r.get(5)),
    })
}

impl Ledger for PostgresStore {
    fn tree_head(&self) -> Result<Option<TreeHead>> {
        let mut conn = self.conn()?;
        let stmt = conn
            .prepare("SELECT origin, size, last_seq, frontier FROM tree_head WHERE id = 1")
            .map_err(|e| self.db(&e))?;
        let Some(r) = conn.client.query_opt(&stmt, &[]).map_err(|e| self.db(&e))? else { return Ok(None) };
        Ok(Some(TreeHead {
            origin: r.get(0),
            size: count(r.get(1)),
            last_seq: r.get(2),
            frontier: frontier_from_bytes(r.get(3)).ok_or_else(|| damaged("the tree's frontier"))?,
        }))
    }

    fn append_tree(
        &self,
        old_size: Option<u64>,
        head: &TreeHead,
        leaves: &[Leaf],
        nodes: &[TreeNode],
    ) -> Result<CommitOutcome> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        // The head row locked first: two processes extending the tree take turns, and the
        // second sees the first's size and gives way.
        let current: Option<i64> = tx
            .query_opt("SELECT size FROM tree_head WHERE id = 1 FOR UPDATE", &[])
            .map_err(|e| self.db(&e))?
            .map(|r| r.get(0));
        if current.map(count) != old_size {
            return Ok(CommitOutcome::Conflict);
        }
        if !leaves.is_empty() {
            let idx: Vec<i64> = leaves.iter().map(|l| big(l.index)).collect();
            let seq: Vec<i64> = leaves.iter().map(|l| l.seq).collect();
            let hashes: Vec<&[u8]> = leaves.iter().map(|l| l.hash.as_bytes()).collect();
            let inserted = tx
                .execute(
                    "INSERT INTO tree_leaves (idx, seq, hash) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])
                     ON CONFLICT (idx) DO NOTHING",
                    &[&idx, &seq, &hashes],
                )
                .map_err(|e| self.db(&e))?;
            if inserted != leaves.len() as u64 {
                // A first head row raced in by another process: it wrote these leaves.
                return Ok(CommitOutcome::Conflict);
            }
        }
        for n in nodes {
            let level = i32::try_from(n.level).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO tree_nodes (level, idx, hash) VALUES ($1, $2, $3)
                 ON CONFLICT (level, idx) DO UPDATE SET hash = excluded.hash",
                &[&level, &big(n.index), &&n.hash[..]],
            )
            .map_err(|e| self.db(&e))?;
        }
        tx.execute(
            "INSERT INTO tree_head (id, origin, size, last_seq, frontier, updated_ms) VALUES (1, $1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET origin = excluded.origin, size = excluded.size, last_seq = excluded.last_seq,
                 frontier = excluded.frontier, updated_ms = excluded.updated_ms",
            &[
                &nul_free(&head.origin),
                &big(head.size),
                &head.last_seq,
                &frontier_bytes(&head.frontier),
                &ms(Timestamp::now()),
            ],
        )
        .map_err(|e| self.db(&e))?;
        tx.commit().map_err(|e| self.db(&e))?;
        Ok(CommitOutcome::Committed { new_alerts: 0 })
    }

    fn set_tree_origin(&self, origin: &str) -> Result<bool> {
        let mut conn = self.conn()?;
        let n = conn
            .client
            .execute(
                "UPDATE tree_head SET origin = $1 WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM checkpoints)",
                &[&nul_free(origin)],
            )
            .map_err(|e| self.db(&e))?;
        Ok(n == 1)
    }

    fn leaves(&self, from: u64, limit: u64) -> Result<Vec<Leaf>> {
        let mut conn = self.conn()?;
        let stmt = conn
            .prepare("SELECT idx, seq, hash FROM tree_leaves WHERE idx >= $1 ORDER BY idx LIMIT $2")
            .map_err(|e| self.db(&e))?;
        conn.client
            .query(&stmt, &[&big(from), &big(limit)])
            .map_err(|e| self.db(&e))?
            .iter()
            .map(|r| {
                let hash = LeafHash::from_bytes(r.get(2)).ok_or_else(|| damaged("a leaf"))?;
                Ok(Leaf { index: count(r.get(0)), seq: r.get(1), hash })
            })
            .collect()
    }

    fn tree_nodes(&self, level: u32, from: u64, limit: u64) -> Result<Vec<TreeNode>> {
        let mut conn = self.conn()?;
        let stmt = conn
            .prepare("SELECT idx, hash FROM tree_nodes WHERE level = $1 AND idx >= $2 ORDER BY idx LIMIT $3")
            .map_err(|e| self.db(&e))?;
        let lvl = i32::try_from(level).unwrap_or(i32::MAX);
        conn.client
            .query(&stmt, &[&lvl, &big(from), &big(limit)])
            .map_err(|e| self.db(&e))?
            .iter()
            .map(|r| Ok(TreeNode { level, index: count(r.get(0)), hash: hash(r.get(1), "a tree node")? }))
            .collect()
    }

    fn add_checkpoint(
        &self,
        size: u64,
        root: &Hash,
        note: &str,
        signed_by: Option<&str>,
        made_at: Timestamp,
    ) -> Result<Checkpoint> {
        let mut conn = self.conn()?;
        let row = conn
            .client
            .query_one(
                "INSERT INTO checkpoints (size, root, note, signed_by, made_ms) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&big(size), &&root[..], &nul_free(note), &signed_by.map(nul_free), &ms(made_at)],
            )
            .map_err(|e| self.db(&e))?;
        Ok(Checkpoint {
            id: row.get(0),
            size,
            root: *root,
            note: note.to_owned(),
            signed_by: signed_by.map(str::to_owned),
            made_at: ts(ms(made_at)),
        })
    }

    fn checkpoints(&self, after: i64, limit: u64) -> Result<Vec<Checkpoint>> {
        let mut conn = self.conn()?;
        let stmt =
            conn.prepare(&format!("{CHECKPOINT} WHERE id > $1 ORDER BY id LIMIT $2")).map_err(|e| self.db(&e))?;
        conn.client.query(&stmt, &[&after, &big(limit)]).map_err(|e| self.db(&e))?.iter().map(read_checkpoint).collect()
    }

    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let mut conn = self.conn()?;
        let stmt = conn.prepare(&format!("{CHECKPOINT} ORDER BY id DESC LIMIT 1")).map_err(|e| self.db(&e))?;
        conn.client.query_opt(&stmt, &[]).map_err(|e| self.db(&e))?.as_ref().map(read_checkpoint).transpose()
    }

    fn record_verification(&self, v: &Verification) -> Result<()> {
        let mut conn = self.conn()?;
        conn.client
            .execute(
                "INSERT INTO verifications (at_ms, size, last_seq, frontier, finding, checkpoint_size)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &ms(v.at),
                    &big(v.size),
                    &v.last_seq,
                    &frontier_bytes(&v.frontier),
                    &v.finding.as_deref().map(nul_free),
                    &v.checkpoint_size.map(big),
                ],
            )
            .map(drop)
            .map_err(|e| self.db(&e))
    }

    fn latest_verification(&self, clean: bool) -> Result<Option<Verification>> {
        let mut conn = self.conn()?;
        let filter = if clean { "WHERE finding IS NULL" } else { "" };
        let stmt = conn
            .prepare(&format!(
                "SELECT at_ms, size, last_seq, frontier, finding, checkpoint_size FROM verifications {filter}
                 ORDER BY id DESC LIMIT 1"
            ))
            .map_err(|e| self.db(&e))?;
        let Some(r) = conn.client.query_opt(&stmt, &[]).map_err(|e| self.db(&e))? else { return Ok(None) };
        Ok(Some(Verification {
            at: ts(r.get(0)),
            size: count(r.get(1)),
            last_seq: r.get(2),
            frontier: frontier_from_bytes(r.get(3)).ok_or_else(|| damaged("a verification's frontier"))?,
            finding: r.get(4),
            checkpoint_size: r.get::<_, Option<i64>>(5).map(count),
        }))
    }
}
