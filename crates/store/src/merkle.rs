//! The Merkle tree of RFC 6962 (and RFC 9162 §2.1): its hashing, its growth one leaf at
//! a time, and inclusion and consistency proofs with their verification. Here, beside
//! the storage interface, so that a backend can grow the tree in the transaction that
//! stores the events; `tfaudit-integrity` checkpoints, verifies and proves with it.
//!
//! The tree is never held whole. Growing it needs only the *frontier* (the roots of the
//! perfect subtrees that make up its size, at most 64 hashes); a proof needs the roots of
//! a few perfect subtrees, which a [`Nodes`] source gives (the archive keeps every leaf
//! hash and every 256th-level node, so no proof reads more than a few hundred rows).

use sha2::{Digest, Sha256};

/// A perfect subtree an append completed, at a level the archive keeps.
pub use crate::ledger::TreeNode;

/// A SHA-256 hash: a leaf, a node or a root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of nothing.
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 ‖ data)`.
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Levels at which the archive keeps the roots of completed perfect subtrees (a level is
/// the subtree's height: level 8 covers 256 leaves), so that any perfect subtree's root
/// is combined from at most 128 kept hashes.
pub const KEPT_LEVELS: u32 = 8;

/// The right edge of a tree: the roots of its perfect subtrees, largest (leftmost) first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// A frontier read back from storage; `None` when the hashes do not fit the size.
    #[must_use]
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (size.count_ones() as usize == hashes.len()).then_some(Self { size, hashes })
    }

    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    #[must_use]
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf hash; says which kept-level subtrees it completed.
    pub fn push(&mut self, leaf: Hash, completed: &mut Vec<TreeNode>) {
        let index = self.size;
        let mut hash = leaf;
        let mut level: u32 = 0;
        while (index >> level) & 1 == 1 {
            let left = self.hashes.pop().expect("a set bit of the size has a subtree");
            hash = node_hash(&left, &hash);
            level += 1;
            if level.is_multiple_of(KEPT_LEVELS) {
                completed.push(TreeNode { level, index: index >> level, hash });
            }
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The root hash of the tree of this size.
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        let Some(last) = it.next() else { return empty_root() };
        it.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// Where a proof finds the roots of perfect subtrees of the tree it proves from.
pub trait Nodes {
    type Error;
    /// The root of the perfect subtree of height `level` at `index` (leaves
    /// `index << level .. (index + 1) << level`); level 0 is a leaf hash.
    ///
    /// # Errors
    /// When the source cannot read it.
    fn perfect(&mut self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The tag that begins every leaf's data: a leaf of another kind of log never hashes
/// like an event of this one.
const LEAF_TAG: &[u8] = b"tfaudit event v1\0";

/// The leaf hash of an event: `SHA-256(0x00 ‖ "tfaudit event v1\0" ‖ seq as 8 bytes
/// big-endian ‖ length of the organization as 4 bytes big-endian ‖ organization ‖
/// the event's original bytes)`. Documented in the README so that anyone can
/// recompute it.
#[must_use]
pub fn event_leaf_hash(seq: i64, organization: &str, raw: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(LEAF_TAG);
    h.update(seq.to_be_bytes());
    h.update(u32::try_from(organization.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.update(organization.as_bytes());
    h.update(raw);
    h.finalize().into()
}

/// A new archive's origin: unique, so that checkpoints of two archives never pass for
/// each other.
#[must_use]
pub fn new_origin() -> String {
    let mut bytes = [0u8; 8];
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(t.to_be_bytes());
    h.update(std::process::id().to_be_bytes());
    h.update(std::thread::current().name().unwrap_or_default().as_bytes());
    bytes.copy_from_slice(&h.finalize()[..8]);
    format!("tfaudit.archive/{}", hex::encode(bytes))
}

/// Leaf hashes held in memory (tests, and small trees).
impl Nodes for &[Hash] {
    type Error = std::convert::Infallible;
    fn perfect(&mut self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        let lo = usize::try_from(index << level).unwrap_or(usize::MAX);
        let hi = lo.saturating_add(1 << level).min(self.len());
        Ok(range_root(&self[lo..hi]))
    }
}

/// The root of the tree of these leaf (or subtree) hashes, in order.
#[must_use]
pub fn range_root(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::default();
    let mut sink = Vec::new();
    for l in leaves {
        f.push(*l, &mut sink);
    }
    f.root()
}

/// The largest power of two smaller than `n` (n ≥ 2): where RFC 6962 splits a tree.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The root of leaves `lo..hi`, where `lo` is aligned to the largest power of two in
/// `hi - lo` or more (true of every range a proof asks for): the perfect subtrees of
/// the range, folded from the right.
fn mth<N: Nodes>(nodes: &mut N, lo: u64, hi: u64) -> Result<Hash, N::Error> {
    let mut parts = Vec::new();
    let mut at = lo;
    while at < hi {
        let level = 63 - (hi - at).leading_zeros();
        parts.push(nodes.perfect(level, at >> level)?);
        at += 1 << level;
    }
    let mut it = parts.iter().rev();
    let Some(last) = it.next() else { return Ok(empty_root()) };
    Ok(it.fold(*last, |right, left| node_hash(left, &right)))
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 6962 §2.1.1).
///
/// # Errors
/// When `nodes` cannot read a subtree.
///
/// # Panics
/// When `index >= size` (callers check).
pub fn inclusion_proof<N: Nodes>(nodes: &mut N, index: u64, size: u64) -> Result<Vec<Hash>, N::Error> {
    assert!(index < size, "leaf {index} is not in a tree of {size}");
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    let mut stack = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            stack.push((lo + k, hi));
            hi = lo + k;
        } else {
            stack.push((lo, lo + k));
            lo += k;
            m -= k;
        }
    }
    while let Some((a, b)) = stack.pop() {
        path.push(mth(nodes, a, b)?);
    }
    Ok(path)
}

/// The proof that the tree of `old` leaves is a prefix of the tree of `new` leaves
/// (RFC 6962 §2.1.2).
///
/// # Errors
/// When `nodes` cannot read a subtree.
///
/// # Panics
/// When `old > new` (callers check).
pub fn consistency_proof<N: Nodes>(nodes: &mut N, old: u64, new: u64) -> Result<Vec<Hash>, N::Error> {
    assert!(old <= new, "a tree of {old} cannot be a prefix of one of {new}");
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new, old, true);
    let mut stack = Vec::new();
    loop {
        if m == hi - lo {
            if !whole {
                stack.push((lo, hi));
            }
            break;
        }
        let k = split(hi - lo);
        if m <= k {
            stack.push((lo + k, hi));
            hi = lo + k;
        } else {
            stack.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    while let Some((a, b)) = stack.pop() {
        proof.push(mth(nodes, a, b)?);
    }
    Ok(proof)
}

/// Checks an audit path (RFC 9162 §2.1.3.2).
#[must_use]
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Checks a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
#[must_use]
pub fn verify_consistency(old: u64, old_root: &Hash, new: u64, new_root: &Hash, proof: &[Hash]) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some(first) = path.first() else { return false };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference leaves and roots of RFC 6962's hashing, as Certificate Transparency's
    // implementations test them.
    const DATA: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves() -> Vec<Hash> {
        DATA.iter().map(|d| leaf_hash(&hex::decode(d).unwrap())).collect()
    }

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn a_leaf_binds_bytes_organization_and_seq() {
        let a = event_leaf_hash(1, "acme", br#"{"id":"x"}"#);
        assert_ne!(a, event_leaf_hash(2, "acme", br#"{"id":"x"}"#));
        assert_ne!(a, event_leaf_hash(1, "acme2", br#"{"id":"x"}"#));
        assert_ne!(a, event_leaf_hash(1, "acme", br#"{"id": "x"}"#));
        // The length prefix keeps the organization and the bytes apart.
        assert_ne!(event_leaf_hash(1, "ab", b"c"), event_leaf_hash(1, "a", b"bc"));
        let mut data = LEAF_TAG.to_vec();
        data.extend_from_slice(&1i64.to_be_bytes());
        data.extend_from_slice(&4u32.to_be_bytes());
        data.extend_from_slice(b"acme");
        data.extend_from_slice(br#"{"id":"x"}"#);
        assert_eq!(a, leaf_hash(&data));
        assert_ne!(new_origin(), new_origin());
    }

    #[test]
    fn roots_are_rfc_6962s() {
        let leaves = leaves();
        let mut f = Frontier::default();
        let mut done = Vec::new();
        assert_eq!(hex::encode(f.root()), ROOTS[0]);
        for (n, l) in leaves.iter().enumerate() {
            f.push(*l, &mut done);
            assert_eq!(hex::encode(f.root()), ROOTS[n + 1], "size {}", n + 1);
            let again = Frontier::from_parts(f.size(), f.hashes().to_vec()).unwrap();
            assert_eq!(again.root(), f.root());
        }
        assert!(Frontier::from_parts(3, vec![[0; 32]]).is_none());
    }

    #[test]
    fn proofs_match_the_reference_paths() {
        let leaves = leaves();
        let mut nodes: &[Hash] = &leaves;
        let p0 = inclusion_proof(&mut nodes, 0, 8).unwrap();
        let want0 = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(p0, want0.map(h));
        let p5 = inclusion_proof(&mut nodes, 5, 8).unwrap();
        let want5 = [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ];
        assert_eq!(p5, want5.map(h));
        let c28 = consistency_proof(&mut nodes, 2, 8).unwrap();
        assert_eq!(
            c28,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ]
        );
        let c68 = consistency_proof(&mut nodes, 6, 8).unwrap();
        assert_eq!(
            c68,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        let c25 = consistency_proof(&mut nodes, 2, 5).unwrap();
        assert_eq!(
            c25,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ]
        );
    }

    #[test]
    fn every_proof_verifies_in_every_size_and_nothing_else_does() {
        let many: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=many.len() as u64 {
            let tree = &many[..n as usize];
            let mut nodes: &[Hash] = tree;
            let root = range_root(tree);
            for i in 0..n {
                let path = inclusion_proof(&mut nodes, i, n).unwrap();
                assert!(verify_inclusion(&tree[i as usize], i, n, &path, &root), "{i} in {n}");
                assert!(!verify_inclusion(&tree[(i as usize + 1) % tree.len()], i, n, &path, &root) || n == 1);
                if n > 1 {
                    assert!(!verify_inclusion(&tree[i as usize], (i + 1) % n, n, &path, &root));
                }
                if let Some(first) = path.first() {
                    let mut bad = path.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(&tree[i as usize], i, n, &bad, &root));
                }
            }
            for m in 0..=n {
                let old_root = range_root(&tree[..m as usize]);
                let proof = consistency_proof(&mut nodes, m, n).unwrap();
                assert!(verify_consistency(m, &old_root, n, &root, &proof), "{m} → {n}");
                if m > 0 && m < n {
                    let wrong = node_hash(&old_root, &old_root);
                    assert!(!verify_consistency(m, &wrong, n, &root, &proof));
                    assert!(!verify_consistency(m, &old_root, n, &wrong, &proof));
                }
            }
        }
    }

    #[test]
    fn kept_levels_are_reported_when_completed() {
        let mut f = Frontier::default();
        let mut done = Vec::new();
        let leaves: Vec<Hash> = (0..600u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for l in &leaves {
            f.push(*l, &mut done);
        }
        assert_eq!(done.len(), 2);
        assert_eq!((done[0].level, done[0].index), (8, 0));
        assert_eq!(done[0].hash, range_root(&leaves[..256]));
        assert_eq!((done[1].level, done[1].index), (8, 1));
        assert_eq!(done[1].hash, range_root(&leaves[256..512]));
    }
}
