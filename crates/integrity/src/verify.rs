//! Verifying an archive: the tree recomputed from the events, against the leaves kept
//! at ingest and against every checkpoint — kept in the archive or given from a copy
//! kept elsewhere.

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;
use serde::Serialize;
use tfaudit_store::{Archive, Leaf, Ledger, PrunedDay, Retention, StoredEvent, TreeNode, Verification};

use crate::merkle::{Frontier, Hash};
use crate::{IntegrityError, NoteVerifier, ParsedCheckpoint, Result, event_leaf_hash};

const BATCH: u64 = 5_000;

/// What a verification can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An event's bytes, organization or place differ from when it was archived.
    Changed,
    /// An event of the tree is no longer in the archive.
    Deleted,
    /// An event is in the archive but not where the tree has it.
    Inserted,
    /// Two events swapped places.
    Reordered,
    /// Events a checkpoint covered are gone from the end of the archive.
    RolledBack,
    /// A checkpoint was altered, is not signed by the key, or is of another archive.
    Checkpoint,
    /// The copy of a day removed by retention is missing from cold storage, or differs
    /// from what was archived.
    Copy,
}

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The event concerned, when there is one.
    pub seq: Option<i64>,
    pub event_id: Option<String>,
    pub message: String,
}

/// Reads a pruned day's copy: each event's seq and leaf hash, or why it cannot.
pub type CopyReader<'a> = dyn Fn(&PrunedDay) -> std::result::Result<Vec<(i64, Hash)>, String> + 'a;

/// How to verify.
#[derive(Default)]
pub struct VerifyOptions<'a> {
    /// The public key checkpoints must be signed with; without one, signatures are not
    /// checked (and the report says so).
    pub key: Option<&'a NoteVerifier>,
    /// Checkpoints from elsewhere (a copy outside the archive's reach): (where from, text).
    pub external: Vec<(String, String)>,
    /// Only what was added since the last clean verification.
    pub quick: bool,
    /// Reads the copy of a day removed by retention (`[retention] keep_local`): each
    /// event's seq and leaf hash, or why the copy cannot be read. Without it, pruned
    /// events are vouched for by their archived leaves (and the checkpoints over them)
    /// only.
    pub copies: Option<&'a CopyReader<'a>>,
}

impl std::fmt::Debug for VerifyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("key", &self.key)
            .field("external", &self.external.len())
            .field("quick", &self.quick)
            .field("copies", &self.copies.is_some())
            .finish()
    }
}

/// What a verification did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub origin: Option<String>,
    /// Events recomputed.
    pub events_checked: u64,
    /// Where the check began (0, or the last clean verification's size with `quick`).
    pub from_size: u64,
    /// The tree size reached.
    pub tree_size: u64,
    /// Checkpoints whose root was compared with the recomputed tree.
    pub checkpoints_checked: u64,
    /// Checkpoints given from outside the archive among them.
    pub external_checkpoints: u64,
    /// Checkpoints whose signature was checked against the key.
    pub signatures_checked: u64,
    /// Checkpoints that carry no signature (made without a key): compared, but not signed.
    pub unsigned_checkpoints: u64,
    /// The newest checkpoint's size and when it was made.
    pub latest_checkpoint: Option<(u64, Timestamp)>,
    /// Events stored after the tree's end (checkpointed at the next sync).
    pub pending_events: u64,
    /// Events removed by retention, whose archived leaves stood in for them.
    pub pruned_events: u64,
    /// Days removed by retention whose copy in cold storage was read and matched.
    pub copies_checked: u64,
    /// Days removed by retention whose copy was not read (no cold storage given).
    pub copies_unchecked: u64,
    /// The first finding; `None` when the archive verified.
    pub finding: Option<Finding>,
}

struct Target {
    what: String,
    root: Hash,
}

fn finding(kind: FindingKind, e: Option<&StoredEvent>, seq: Option<i64>, message: String) -> Finding {
    Finding { kind, seq: e.map(|e| e.seq).or(seq), event_id: e.map(|e| e.event.id.clone()), message }
}

/// Verifies the archive (see the module's documentation) and records the result.
///
/// # Errors
/// On a database failure (a finding is not an error: it is in the report).
pub fn verify<S: Archive + Ledger + Retention + ?Sized>(
    store: &S,
    options: &VerifyOptions<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report> {
    let head = store.tree_head()?;
    let origin = head.as_ref().map(|h| h.origin.clone());
    let mut report = Report { origin: origin.clone(), ..Report::default() };
    let mut first: Option<Finding> = None;

    // Every checkpoint, kept and given, by tree size.
    let mut targets: BTreeMap<u64, Vec<Target>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.checkpoints(after, 1_000)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for cp in &page {
            report.latest_checkpoint = Some((cp.size, cp.made_at));
            let what = format!("checkpoint #{} (tree size {}, made {})", cp.id, cp.size, cp.made_at);
            let parsed = match ParsedCheckpoint::parse(&cp.note) {
                Ok(p) if p.size == cp.size && p.root == cp.root => p,
                Ok(_) | Err(_) => {
                    first.get_or_insert_with(|| {
                        finding(
                            FindingKind::Checkpoint,
                            None,
                            None,
                            format!("{what} was altered: its note does not say its tree size and root"),
                        )
                    });
                    continue;
                }
            };
            if cp.signed_by.is_some() && parsed.note.signatures.is_empty() {
                first.get_or_insert_with(|| {
                    finding(
                        FindingKind::Checkpoint,
                        None,
                        None,
                        format!("{what} was signed and its signature was removed"),
                    )
                });
            }
            check_checkpoint(&parsed, &what, origin.as_deref(), options.key, &mut report, &mut first);
            targets.entry(cp.size).or_default().push(Target { what, root: cp.root });
        }
    }
    for (from, text) in &options.external {
        let what = format!("the checkpoint from {from}");
        let parsed = ParsedCheckpoint::parse(text)
            .map_err(|e| IntegrityError::Invalid(format!("{from} is not a checkpoint: {e}")))?;
        report.external_checkpoints += 1;
        check_checkpoint(&parsed, &what, origin.as_deref(), options.key, &mut report, &mut first);
        targets
            .entry(parsed.size)
            .or_default()
            .push(Target { what: format!("{what} (tree size {})", parsed.size), root: parsed.root });
    }

    // Where to begin.
    let (frontier, after_seq) = match (options.quick, store.latest_verification(true)?) {
        (true, Some(v)) => (
            Frontier::from_parts(v.size, v.frontier.clone()).ok_or_else(|| {
                IntegrityError::Invalid("the last verification's record is damaged; verify without --quick".into())
            })?,
            v.last_seq,
        ),
        _ => (Frontier::default(), 0),
    };
    report.from_size = frontier.size();
    let total = head.as_ref().map_or(0, |h| h.size.saturating_sub(frontier.size()));
    let tree_last_seq = head.as_ref().map_or(0, |h| h.last_seq);
    let pruned_days: Vec<PrunedDay> = store.pruned_days()?.into_iter().filter(|d| d.restored_at.is_none()).collect();
    let mut pruned: Vec<i64> =
        pruned_days.iter().flat_map(|d| d.seqs.iter().copied()).filter(|&s| s > after_seq).collect();
    pruned.sort_unstable();
    let mut tree = Rebuild {
        store,
        frontier,
        leaves: VecDeque::new(),
        leaves_done: false,
        pruned,
        pruned_next: 0,
        sink: Vec::new(),
    };

    // A first changed event, held back to see whether a second one shows it swapped.
    let mut changed: Option<(Leaf, i64)> = None;
    let mut done = false;
    let mut last_checked_seq = after_seq;
    // One thread reads the events (the database and decompression) while this one
    // hashes and compares: two cores verify about twice as fast as one.
    std::thread::scope(|scope| -> Result<()> {
        // Only (seq, leaf hash) cross to this thread: each event is freed by the thread
        // that read it (freeing across threads contends on the allocator's locks).
        let (batches, received) = std::sync::mpsc::sync_channel::<Result<Vec<Seen>>>(2);
        let start = after_seq;
        scope.spawn(move || {
            let mut after = start;
            loop {
                let mut events = Vec::with_capacity(BATCH as usize);
                if let Err(e) = store.event_bytes_after(after, BATCH, &mut |seq, source, raw| {
                    events.push(Seen { seq, hash: event_leaf_hash(seq, source, raw.as_bytes()) });
                    Ok(())
                }) {
                    let _ = batches.send(Err(e.into()));
                    return;
                }
                let end = events.is_empty();
                if let Some(last) = events.last() {
                    after = last.seq;
                }
                // The reader stops when this side has what it needs (it drops `received`).
                if batches.send(Ok(events)).is_err() || end {
                    return;
                }
            }
        });
        'batches: while !done && first.is_none() {
            let Ok(events) = received.recv() else { break };
            let events = events?;
            if events.is_empty() {
                break;
            }
            for e in events {
                // Events removed by retention before this one: their archived leaves
                // stand in for them.
                while let Some(leaf) = tree.front()?
                    && leaf.seq < e.seq
                    && tree.is_pruned(leaf.seq)
                {
                    if let Some((a, ea)) = changed.take() {
                        first = Some(changed_finding(&a, &event_at(store, ea)?));
                        break 'batches;
                    }
                    if let Some(f) = tree.take_pruned(&leaf) {
                        first = Some(f);
                        break 'batches;
                    }
                    report.pruned_events += 1;
                    if let Some(f) = tree.check(&targets, leaf.seq, &mut report) {
                        first = Some(f);
                        break 'batches;
                    }
                }
                let Some(leaf) = tree.front()? else {
                    if e.seq <= tree_last_seq && first.is_none() && changed.is_none() {
                        let e = event_at(store, e.seq)?;
                        first = Some(inserted(&e));
                    }
                    report.pending_events += 1;
                    continue;
                };
                if leaf.seq < e.seq {
                    first.get_or_insert_with(|| {
                        finding(
                            FindingKind::Deleted,
                            None,
                            Some(leaf.seq),
                            format!(
                                "the event at seq {} (entry {} of the tree) is no longer in the archive: it was deleted",
                                leaf.seq, leaf.index
                            ),
                        )
                    });
                    done = true;
                    break;
                }
                if leaf.seq > e.seq {
                    let e = event_at(store, e.seq)?;
                    first.get_or_insert_with(|| inserted(&e));
                    done = true;
                    break;
                }
                let hash = e.hash;
                // A changed event is told apart from one inserted, deleted or swapped (with
                // the seqs after it renumbered to hide it) by the next event and leaf.
                if let Some((a, ea)) = changed.take() {
                    first = Some(classify(&a, &event_at(store, ea)?, &leaf, &event_at(store, e.seq)?));
                    done = true;
                    break;
                }
                if !leaf.hash.matches(&hash) {
                    changed = Some((leaf, e.seq));
                }
                tree.take(hash);
                report.events_checked += 1;
                last_checked_seq = e.seq;
                if report.events_checked.is_multiple_of(65_536) {
                    progress(report.events_checked + report.pruned_events, total);
                }
                if changed.is_none()
                    && let Some(f) = tree.check(&targets, e.seq, &mut report)
                {
                    first = Some(f);
                    done = true;
                    break;
                }
            }
        }
        drop(received);
        Ok(())
    })?;
    if first.is_none()
        && let Some((a, ea)) = changed.take()
    {
        first = Some(changed_finding(&a, &event_at(store, ea)?));
    }
    // Pruned events after the last event left.
    while first.is_none()
        && let Some(leaf) = tree.front()?
        && tree.is_pruned(leaf.seq)
    {
        if let Some(f) = tree.take_pruned(&leaf) {
            first = Some(f);
            break;
        }
        report.pruned_events += 1;
        last_checked_seq = last_checked_seq.max(leaf.seq);
        first = tree.check(&targets, leaf.seq, &mut report);
    }
    if first.is_none() {
        // Leaves with no event left after the last event: the tail was removed.
        if let Some(leaf) = tree.front()? {
            first = Some(finding(
                FindingKind::RolledBack,
                None,
                Some(leaf.seq),
                format!(
                    "the events from seq {} (entry {} of the tree) on are no longer in the archive: its tail was removed",
                    leaf.seq, leaf.index
                ),
            ));
        }
    }
    let frontier = &tree.frontier;
    if first.is_none()
        && let Some((size, ts)) = targets.range(frontier.size() + 1..).next()
    {
        first = Some(finding(
            FindingKind::RolledBack,
            None,
            None,
            format!(
                "{} covers {size} events but the archive's tree holds {}: events were removed after it was made",
                ts[0].what,
                frontier.size()
            ),
        ));
    }
    if first.is_none()
        && let Some(h) = &head
        && (h.size != frontier.size()
            || Frontier::from_parts(h.size, h.frontier.clone()).map(|f| f.root()) != Some(frontier.root()))
        && h.size >= frontier.size()
    {
        first = Some(finding(
            FindingKind::RolledBack,
            None,
            None,
            format!(
                "the tree's head says {} events but {} were found: the archive's tree was cut or rewritten",
                h.size,
                frontier.size()
            ),
        ));
    }
    // The copies of pruned days, against the leaves archived for them.
    for day in &pruned_days {
        if first.is_some() {
            break;
        }
        let Some(read) = options.copies else {
            report.copies_unchecked += 1;
            continue;
        };
        first = check_copy(store, day, read(day))?;
        report.copies_checked += u64::from(first.is_none());
    }
    progress(report.events_checked + report.pruned_events, total);
    report.tree_size = frontier.size();
    report.finding = first;
    store.record_verification(&Verification {
        at: Timestamp::now(),
        size: frontier.size(),
        last_seq: last_checked_seq,
        frontier: frontier.hashes().to_vec(),
        finding: report.finding.as_ref().map(|f| f.message.clone()),
        checkpoint_size: targets.range(..=frontier.size()).next_back().map(|(s, _)| *s),
    })?;
    Ok(report)
}

/// The tree as verification rebuilds it, beside the leaves archived at ingest.
struct Rebuild<'s, S: ?Sized> {
    store: &'s S,
    frontier: Frontier,
    /// Archived leaves from `frontier.size()` on, read a batch at a time.
    leaves: VecDeque<Leaf>,
    leaves_done: bool,
    /// Seqs removed by retention, ascending, and how far the walk has come through them.
    pruned: Vec<i64>,
    pruned_next: usize,
    sink: Vec<TreeNode>,
}

impl<S: Ledger + ?Sized> Rebuild<'_, S> {
    /// The next archived leaf, not taken.
    fn front(&mut self) -> Result<Option<Leaf>> {
        if self.leaves.is_empty() && !self.leaves_done {
            self.leaves.extend(self.store.leaves(self.frontier.size(), BATCH)?);
            self.leaves_done = self.leaves.is_empty();
        }
        Ok(self.leaves.front().copied())
    }

    /// Whether the event with this seq was removed by retention; asked in seq order.
    fn is_pruned(&mut self, seq: i64) -> bool {
        while self.pruned.get(self.pruned_next).is_some_and(|&p| p < seq) {
            self.pruned_next += 1;
        }
        self.pruned.get(self.pruned_next) == Some(&seq)
    }

    /// Takes the next archived leaf (the front one) into the rebuilt tree as `hash`:
    /// the recomputed hash of its event, or the archived hash itself for a pruned one.
    fn take(&mut self, hash: Hash) {
        self.leaves.pop_front();
        self.frontier.push(hash, &mut self.sink);
        self.sink.clear();
    }

    /// Takes the next archived leaf, of an event retention removed, into the rebuilt
    /// tree as its whole hash, which stands in for the event; a finding (nothing
    /// taken) when only a prefix is kept, as the archive keeps for an event it holds.
    fn take_pruned(&mut self, leaf: &Leaf) -> Option<Finding> {
        let Some(hash) = leaf.hash.whole() else {
            return Some(finding(
                FindingKind::Changed,
                None,
                Some(leaf.seq),
                format!(
                    "the tree keeps only part of the hash of the event at seq {} (entry {} of the tree), which \
                     retention removed: the tree was changed",
                    leaf.seq, leaf.index
                ),
            ));
        };
        self.take(hash);
        None
    }

    /// The checkpoints of the rebuilt tree's size, compared with its root.
    fn check(&self, targets: &BTreeMap<u64, Vec<Target>>, seq: i64, report: &mut Report) -> Option<Finding> {
        let ts = targets.get(&self.frontier.size())?;
        let root = self.frontier.root();
        if let Some(t) = ts.iter().find(|t| t.root != root) {
            return Some(finding(
                FindingKind::Changed,
                None,
                None,
                format!(
                    "{} does not match the archive: an event at or before entry {} of the tree (seq {seq}) was changed, or the tree was rewritten",
                    t.what,
                    self.frontier.size() - 1,
                ),
            ));
        }
        report.checkpoints_checked += ts.len() as u64;
        None
    }
}

/// A pruned day's copy (as `read` gave it) against the leaves archived for its seqs.
fn check_copy<S: Ledger + ?Sized>(
    store: &S,
    day: &PrunedDay,
    read: std::result::Result<Vec<(i64, Hash)>, String>,
) -> Result<Option<Finding>> {
    let what = format!("the copy of {} {} ({})", day.source, day.day, day.path);
    let copy_finding = |seq: Option<i64>, message: String| Some(finding(FindingKind::Copy, None, seq, message));
    let mut copy = match read {
        Ok(copy) => copy,
        Err(why) => return Ok(copy_finding(None, format!("{what} cannot be checked: {why}"))),
    };
    copy.sort_unstable_by_key(|(seq, _)| *seq);
    let seqs: Vec<i64> = copy.iter().map(|(seq, _)| *seq).collect();
    if seqs != day.seqs {
        return Ok(copy_finding(
            None,
            format!(
                "{what} holds {} events where {} were removed from the archive: it is not the day that was pruned",
                seqs.len(),
                day.seqs.len()
            ),
        ));
    }
    let leaves = leaves_for_seqs(store, &day.seqs)?;
    for (seq, hash) in &copy {
        match leaves.binary_search_by_key(seq, |l| l.seq) {
            Ok(i) if leaves[i].hash.matches(hash) => {}
            Ok(i) => {
                return Ok(copy_finding(
                    Some(*seq),
                    format!(
                        "{what} differs from what was archived at seq {seq} (entry {} of the tree): the copy was changed",
                        leaves[i].index
                    ),
                ));
            }
            Err(_) => {
                return Ok(copy_finding(
                    Some(*seq),
                    format!("{what} holds seq {seq}, which the archive's tree does not have"),
                ));
            }
        }
    }
    Ok(None)
}

/// The archived leaves with these seqs (ascending), found by binary search over the
/// tree's entries: entries are in seq order.
fn leaves_for_seqs<S: Ledger + ?Sized>(store: &S, seqs: &[i64]) -> Result<Vec<Leaf>> {
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else { return Ok(Vec::new()) };
    let size = store.tree_head()?.map_or(0, |h| h.size);
    // The first entry whose seq is at least `first`.
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match store.leaves(mid, 1)?.first() {
            Some(l) if l.seq < first => lo = mid + 1,
            _ => hi = mid,
        }
    }
    let mut found = Vec::with_capacity(seqs.len());
    let mut from = lo;
    'read: loop {
        let batch = store.leaves(from, BATCH)?;
        let Some(end) = batch.last() else { break };
        from = end.index + 1;
        for leaf in batch {
            if leaf.seq > last {
                break 'read;
            }
            if seqs.binary_search(&leaf.seq).is_ok() {
                found.push(leaf);
            }
        }
    }
    Ok(found)
}

/// What happened at leaf `a` (whose event `ea` does not hash as archived), seen from the
/// next leaf `b` and event `eb`.
fn classify(a: &Leaf, ea: &StoredEvent, b: &Leaf, eb: &StoredEvent) -> Finding {
    let holds =
        |leaf: &Leaf, e: &StoredEvent| leaf.hash.matches(&event_leaf_hash(leaf.seq, &e.source, e.event.raw.as_bytes()));
    match (holds(a, eb), holds(b, ea)) {
        (true, true) => finding(
            FindingKind::Reordered,
            Some(ea),
            None,
            format!(
                "events {} (seq {}) and {} (seq {}) swapped places in the archive",
                ea.event.id, ea.seq, eb.event.id, eb.seq
            ),
        ),
        (true, false) => finding(
            FindingKind::Inserted,
            Some(ea),
            None,
            format!(
                "event {} (seq {}) was inserted after the fact, and the events after it renumbered",
                ea.event.id, ea.seq
            ),
        ),
        (false, true) => finding(
            FindingKind::Deleted,
            None,
            Some(a.seq),
            format!(
                "the event archived at seq {} (entry {} of the tree) was deleted, and the events after it renumbered",
                a.seq, a.index
            ),
        ),
        (false, false) => changed_finding(a, ea),
    }
}

/// An event read back and its leaf hash, as the reading thread hands them over.
struct Seen {
    seq: i64,
    hash: Hash,
}

/// The event with this `seq`, read again to name it in a finding.
fn event_at<S: Archive + ?Sized>(store: &S, seq: i64) -> Result<StoredEvent> {
    let mut found = None;
    store.events_after(seq - 1, 1, &mut |e| {
        found = Some(e);
        Ok(())
    })?;
    found
        .filter(|e| e.seq == seq)
        .ok_or_else(|| IntegrityError::Invalid(format!("event {seq} vanished while it was verified")))
}

fn inserted(e: &StoredEvent) -> Finding {
    finding(
        FindingKind::Inserted,
        Some(e),
        None,
        format!(
            "event {} (seq {}) is in the archive but not in its tree: it was inserted after the fact",
            e.event.id, e.seq
        ),
    )
}

fn changed_finding(leaf: &Leaf, e: &StoredEvent) -> Finding {
    finding(
        FindingKind::Changed,
        Some(e),
        None,
        format!(
            "event {} (seq {}, entry {} of the tree) differs from what was archived: its bytes or its organization were changed",
            e.event.id, e.seq, leaf.index
        ),
    )
}

fn check_checkpoint(
    cp: &ParsedCheckpoint,
    what: &str,
    origin: Option<&str>,
    key: Option<&NoteVerifier>,
    report: &mut Report,
    first: &mut Option<Finding>,
) {
    if let Some(o) = origin
        && cp.origin != o
    {
        first.get_or_insert_with(|| {
            finding(
                FindingKind::Checkpoint,
                None,
                None,
                format!("{what} is of another archive ({:?}, this one is {o:?})", cp.origin),
            )
        });
        return;
    }
    // A checkpoint made without a key is counted, not a finding: it proves less, and
    // the report says how many there are.
    if cp.note.signatures.is_empty() {
        report.unsigned_checkpoints += 1;
        return;
    }
    if let Some(k) = key {
        report.signatures_checked += 1;
        if !cp.note.signed_by(k) {
            first.get_or_insert_with(|| {
                finding(
                    FindingKind::Checkpoint,
                    None,
                    None,
                    format!("{what} is not signed by {}: it was replaced, or made without the signing key", k.encode()),
                )
            });
        }
    }
}
