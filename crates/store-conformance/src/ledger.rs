//! The ledger: the Merkle tree's rows, checkpoints and verifications, and the tree the
//! integrity crate grows, checks and proves from over each backend.

use std::time::Duration;

use tfaudit_integrity::{CheckpointMade, NoteSigner, VerifyOptions};
use tfaudit_store::{Checkpoint, CommitOutcome, Leaf, LeafHash, TreeHead, TreeNode, Verification};

use crate::{Fresh, at, ev, source};

fn head(size: u64, last_seq: i64) -> TreeHead {
    TreeHead {
        origin: "tfaudit.archive/test".into(),
        size,
        last_seq,
        frontier: vec![[size as u8; 32]; size.count_ones() as usize],
    }
}

fn leaf(index: u64, seq: i64) -> Leaf {
    Leaf { index, seq, hash: LeafHash::Whole([index as u8 + 100; 32]) }
}

/// Leaves read back are those appended: the same places, and each hash kept whole or
/// as a prefix of the whole one (see `LeafHash`).
#[track_caller]
fn assert_leaves(got: Vec<Leaf>, want: &[Leaf]) {
    let places = |l: &[Leaf]| l.iter().map(|l| (l.index, l.seq)).collect::<Vec<_>>();
    assert_eq!(places(&got), places(want));
    for (g, w) in got.iter().zip(want) {
        assert!(g.hash.matches(&w.hash.whole().expect("appended whole")), "leaf {}: {:?}", g.index, g.hash);
    }
}

/// The tree's head moves by compare-and-set on its size: of two appends from the same
/// size one wins, and the loser writes nothing (no leaf, no node). Leaves and kept
/// nodes come back in index order from an index, at most a limit.
pub fn the_tree_grows_by_compare_and_set(fresh: Fresh<'_>) {
    let a = fresh();
    assert_eq!(a.tree_head().unwrap(), None);
    assert_eq!(a.leaves(0, 10).unwrap(), vec![]);
    let first = [leaf(0, 3), leaf(1, 5)];
    assert!(matches!(a.append_tree(None, &head(2, 5), &first, &[]).unwrap(), CommitOutcome::Committed { .. }));
    assert_eq!(a.tree_head().unwrap(), Some(head(2, 5)));
    // A second first append, and one from a stale size, are refused whole.
    let node = TreeNode { level: 8, index: 0, hash: [9; 32] };
    assert_eq!(a.append_tree(None, &head(3, 9), &[leaf(2, 9)], &[node]).unwrap(), CommitOutcome::Conflict);
    assert_eq!(a.append_tree(Some(1), &head(3, 9), &[leaf(2, 9)], &[node]).unwrap(), CommitOutcome::Conflict);
    assert_leaves(a.leaves(0, 10).unwrap(), &first);
    assert_eq!(a.tree_nodes(8, 0, 10).unwrap(), vec![]);
    assert!(matches!(
        a.append_tree(Some(2), &head(3, 9), &[leaf(2, 9)], &[node]).unwrap(),
        CommitOutcome::Committed { .. }
    ));
    assert_eq!(a.tree_head().unwrap(), Some(head(3, 9)));
    assert_leaves(a.leaves(1, 10).unwrap(), &[leaf(1, 5), leaf(2, 9)]);
    assert_leaves(a.leaves(0, 1).unwrap(), &[leaf(0, 3)]);
    assert_eq!(a.tree_nodes(8, 0, 10).unwrap(), vec![node]);
    assert_eq!(a.tree_nodes(16, 0, 10).unwrap(), vec![]);
    // The origin can be renamed until the first checkpoint, not after.
    assert!(a.set_tree_origin("tfaudit.example/renamed").unwrap());
    assert_eq!(a.tree_head().unwrap().unwrap().origin, "tfaudit.example/renamed");
    a.add_checkpoint(3, &[0; 32], "tfaudit.example/renamed\n3\nx\n", None, at("2024-06-01T00:00:00Z")).unwrap();
    assert!(!a.set_tree_origin("tfaudit.example/again").unwrap());
    assert_eq!(a.tree_head().unwrap().unwrap().origin, "tfaudit.example/renamed");
}

/// Checkpoints are listed oldest first after an id, and the newest is the last added;
/// verifications come back as recorded, the newest, or the newest that found nothing.
pub fn checkpoints_and_verifications_are_kept(fresh: Fresh<'_>) {
    let a = fresh();
    assert_eq!(a.latest_checkpoint().unwrap(), None);
    assert_eq!(a.latest_verification(false).unwrap(), None);
    let made = at("2024-06-01T00:00:00.125Z");
    let c1 = a.add_checkpoint(3, &[1; 32], "o\n3\nroot\n", None, made).unwrap();
    let c2 = a.add_checkpoint(5, &[2; 32], "o\n5\nroot\n\n— k sig\n", Some("k"), made).unwrap();
    assert!(c2.id > c1.id);
    let want = Checkpoint {
        id: c2.id,
        size: 5,
        root: [2; 32],
        note: "o\n5\nroot\n\n— k sig\n".into(),
        signed_by: Some("k".into()),
        made_at: made,
    };
    assert_eq!(c2, want);
    assert_eq!(a.checkpoints(0, 10).unwrap(), vec![c1.clone(), c2.clone()]);
    assert_eq!(a.checkpoints(c1.id, 10).unwrap(), vec![c2.clone()]);
    assert_eq!(a.checkpoints(0, 1).unwrap(), vec![c1]);
    assert_eq!(a.latest_checkpoint().unwrap(), Some(c2));
    let clean = Verification {
        at: made,
        size: 3,
        last_seq: 7,
        frontier: vec![[4; 32], [5; 32]],
        finding: None,
        checkpoint_size: Some(3),
    };
    let failed = Verification { finding: Some("event e changed".into()), checkpoint_size: None, ..clean.clone() };
    a.record_verification(&clean).unwrap();
    a.record_verification(&failed).unwrap();
    assert_eq!(a.latest_verification(false).unwrap(), Some(failed));
    assert_eq!(a.latest_verification(true).unwrap(), Some(clean));
}

/// The tree over the archive: extended in seq order across sources, checkpointed and
/// signed, verified whole and quickly, and every event proven at the checkpoint.
pub fn the_archive_tree_verifies_and_proves_every_event(fresh: Fresh<'_>) {
    let a = fresh();
    let (acme, beta) = (source(&*a, "acme"), source(&*a, "beta"));
    let signer = NoteSigner::from_seed("test-key", [7; 32]).unwrap();
    let every = Duration::from_secs(3600);
    let now = at("2024-06-02T00:00:00Z");
    assert_eq!(tfaudit_integrity::checkpoint(&*a, Some(&signer), None, every, now).unwrap(), CheckpointMade::Empty);
    let mut ids = Vec::new();
    for page in 0..6 {
        let events: Vec<_> = (0..50)
            .map(|i| {
                let id = format!("e{page}-{i}");
                ids.push(id.clone());
                ev(&id, &format!("2024-06-01T{:02}:{:02}:00.000Z", page, i))
            })
            .collect();
        if page % 2 == 0 {
            acme.page(&events)
        } else {
            beta.page(&events)
        };
    }
    let CheckpointMade::New(cp) =
        tfaudit_integrity::checkpoint(&*a, Some(&signer), Some("tfaudit.archive/conformance"), every, now).unwrap()
    else {
        panic!("a first checkpoint is made")
    };
    assert_eq!((cp.size, cp.signed_by.as_deref()), (300, Some("test-key")));
    assert!(cp.note.starts_with("tfaudit.archive/conformance\n300\n"), "{}", cp.note);
    // Nothing new and not an hour later: the same checkpoint.
    assert_eq!(
        tfaudit_integrity::checkpoint(&*a, Some(&signer), None, every, now).unwrap(),
        CheckpointMade::Current(cp.clone())
    );
    let key = signer.verifier();
    let options = VerifyOptions { key: Some(&key), ..VerifyOptions::default() };
    let report = tfaudit_integrity::verify(&*a, &options, &mut |_, _| {}).unwrap();
    assert_eq!(report.finding, None, "{report:?}");
    assert_eq!((report.events_checked, report.checkpoints_checked, report.signatures_checked), (300, 1, 1));
    for id in ids.iter().step_by(37) {
        let proof = tfaudit_integrity::prove(&*a, id).unwrap();
        let text = serde_json::to_string(&proof).unwrap();
        assert_eq!(tfaudit_integrity::check_proof(&text, Some(&key)).unwrap().tree_size, 300);
        let named = text.replacen(id.as_str(), "e9-99", 1);
        assert!(tfaudit_integrity::check_proof(&named, Some(&key)).is_err(), "a proof naming another event fails");
        let mut edited = proof.clone();
        edited.raw = edited.raw.replacen("ann", "bob", 1);
        let edited = serde_json::to_string(&edited).unwrap();
        assert!(tfaudit_integrity::check_proof(&edited, Some(&key)).is_err(), "an edited event fails");
        let mut moved = proof.clone();
        moved.seq += 1;
        assert!(tfaudit_integrity::check_proof(&serde_json::to_string(&moved).unwrap(), Some(&key)).is_err());
    }
    // More events: a quick verification checks only them, against the new checkpoint.
    acme.page(&[ev("late-1", "2024-06-01T07:00:00.000Z"), ev("late-2", "2024-06-01T07:00:01.000Z")]);
    let later = at("2024-06-02T00:00:01Z");
    assert!(
        matches!(tfaudit_integrity::checkpoint(&*a, Some(&signer), None, every, later).unwrap(), CheckpointMade::New(c) if c.size == 302)
    );
    let quick = VerifyOptions { key: Some(&key), quick: true, ..VerifyOptions::default() };
    let report = tfaudit_integrity::verify(&*a, &quick, &mut |_, _| {}).unwrap();
    assert_eq!((report.finding, report.from_size, report.events_checked, report.tree_size), (None, 300, 2, 302));
    // Another key's checkpoints are findings.
    let other = NoteSigner::from_seed("test-key", [8; 32]).unwrap().verifier();
    let wrong = VerifyOptions { key: Some(&other), ..VerifyOptions::default() };
    let report = tfaudit_integrity::verify(&*a, &wrong, &mut |_, _| {}).unwrap();
    assert!(report.finding.is_some_and(|f| f.message.contains("not signed by")));
    assert!(a.latest_verification(false).unwrap().unwrap().finding.is_some());
}
