//! Dead letters (events a consumer's target refused as invalid) and a consumer's lag.

use tfaudit_store::{DeadLetter, EventFilter, Order, Store};

use crate::{Fresh, at, ev, read, source};

fn letter(consumer: &str, seq: i64, reason: &str, attempts: u64) -> DeadLetter {
    DeadLetter {
        consumer: consumer.into(),
        seq,
        event_id: format!("e{seq}"),
        reason: reason.into(),
        at: at("2024-06-01T00:00:00.125Z"),
        attempts,
    }
}

/// The seqs of a consumer's dead letters after `after`, at most `limit`.
fn seqs(store: &dyn Store, consumer: &str, after: i64, limit: u64) -> Vec<i64> {
    store.dead_letters(consumer, after, limit).unwrap().into_iter().map(|d| d.seq).collect()
}

/// Dead letters are kept one per consumer and seq, read back as added, listed per
/// consumer in seq order after a seq and at most a limit. A letter added again replaces
/// its event id, reason and time and adds its attempts, in a later call or in the same.
pub fn dead_letters_are_kept_per_consumer_and_seq(fresh: Fresh<'_>) {
    let a = fresh();
    assert_eq!(a.dead_letters("sink:siem", 0, 10).unwrap(), vec![]);
    assert_eq!(a.dead_letter_counts().unwrap(), vec![]);
    a.add_dead_letters(&[]).unwrap();
    let first = [letter("sink:siem", 30, "field too long", 1), letter("sink:siem", 10, "bad ✓ json", 2)];
    a.add_dead_letters(&first).unwrap();
    a.add_dead_letters(&[letter("sink:other", 20, "mapping", 1), letter("sink:siem", 20, "r", 1)]).unwrap();
    assert_eq!(
        a.dead_letters("sink:siem", 0, 10).unwrap(),
        [first[1].clone(), letter("sink:siem", 20, "r", 1), first[0].clone()]
    );
    assert_eq!(seqs(&*a, "sink:siem", 10, 10), [20, 30], "after is exclusive");
    assert_eq!(seqs(&*a, "sink:siem", 0, 2), [10, 20]);
    assert_eq!(seqs(&*a, "sink:siem", 30, 10), Vec::<i64>::new());
    assert_eq!(seqs(&*a, "sink:siem", 0, 0), Vec::<i64>::new());
    assert_eq!(seqs(&*a, "sink:other", 0, 10), [20], "each consumer its own");
    assert_eq!(seqs(&*a, "SINK:SIEM", 0, 10), Vec::<i64>::new(), "consumers are named exactly");

    let again = DeadLetter {
        event_id: "e30-again".into(),
        reason: "still too long".into(),
        at: at("2024-06-02T00:00:00.5Z"),
        attempts: 2,
        ..first[0].clone()
    };
    a.add_dead_letters(std::slice::from_ref(&again)).unwrap();
    let kept = a.dead_letters("sink:siem", 20, 10).unwrap();
    assert_eq!(kept, [DeadLetter { attempts: 3, ..again.clone() }], "replaced, attempts added");
    // Twice in one call: both count.
    a.add_dead_letters(&[letter("sink:other", 20, "once", 1), letter("sink:other", 20, "twice", 4)]).unwrap();
    let other = a.dead_letters("sink:other", 0, 10).unwrap();
    assert_eq!((other.len(), other[0].reason.as_str(), other[0].attempts), (1, "twice", 6));
    assert_eq!(a.dead_letters("sink:siem", 0, 1).unwrap()[0], first[1], "the others untouched");
}

/// Removing a consumer's dead letters by seq removes only those (never another
/// consumer's at the same seq) and says how many there were; the counts per consumer
/// leave out consumers with none.
pub fn removing_dead_letters_says_how_many_and_counts_leave_out_none(fresh: Fresh<'_>) {
    let a = fresh();
    let letters: Vec<DeadLetter> = [("sink:b", 1), ("sink:b", 2), ("sink:b", 3), ("sink:a", 2), ("sink:c", 9)]
        .iter()
        .map(|(c, s)| letter(c, *s, "bad", 1))
        .collect();
    a.add_dead_letters(&letters).unwrap();
    assert_eq!(
        a.dead_letter_counts().unwrap(),
        [("sink:a".to_owned(), 1), ("sink:b".to_owned(), 3), ("sink:c".to_owned(), 1)]
    );
    assert_eq!(a.remove_dead_letters("sink:b", &[2, 3, 4]).unwrap(), 2, "4 was not there");
    assert_eq!(seqs(&*a, "sink:b", 0, 10), [1]);
    assert_eq!(seqs(&*a, "sink:a", 0, 10), [2], "another consumer's letter at the same seq stays");
    assert_eq!(a.remove_dead_letters("sink:b", &[]).unwrap(), 0);
    assert_eq!(a.remove_dead_letters("sink:b", &[2]).unwrap(), 0, "removed already");
    assert_eq!(a.remove_dead_letters("sink:nobody", &[1]).unwrap(), 0);
    assert_eq!(a.remove_dead_letters("sink:c", &[9]).unwrap(), 1);
    assert_eq!(a.dead_letter_counts().unwrap(), [("sink:a".to_owned(), 1), ("sink:b".to_owned(), 1)]);
    // A letter removed and refused again starts over.
    a.add_dead_letters(&[letter("sink:c", 9, "again", 1)]).unwrap();
    assert_eq!(a.dead_letters("sink:c", 0, 10).unwrap()[0].attempts, 1);
}

/// A target's reason and an event's id are untrusted text: control characters come back
/// as given, and a NUL as given or as U+FFFD (PostgreSQL text holds no NUL); the row is
/// stored either way and found by its consumer.
pub fn hostile_text_in_dead_letters_is_kept_or_made_safe(fresh: Fresh<'_>) {
    let a = fresh();
    let hostile = DeadLetter {
        event_id: "id-\0-\u{1b}[2J".into(),
        reason: "bad \0 field \u{7}\r\n\u{202e}'; DROP TABLE dead_letters; --".into(),
        ..letter("sink:siem", 5, "", 1)
    };
    a.add_dead_letters(std::slice::from_ref(&hostile)).unwrap();
    let kept = a.dead_letters("sink:siem", 0, 10).unwrap();
    assert_eq!(kept.len(), 1);
    let same = |got: &str, given: &str| got == given || got == given.replace('\0', "\u{FFFD}");
    assert!(same(kept[0].event_id.as_str(), hostile.event_id.as_str()), "{:?}", kept[0].event_id);
    assert!(same(kept[0].reason.as_str(), hostile.reason.as_str()), "{:?}", kept[0].reason);
    assert_eq!((kept[0].seq, kept[0].at, kept[0].attempts), (5, hostile.at, 1));
    assert_eq!(a.remove_dead_letters("sink:siem", &[5]).unwrap(), 1);
}

/// `count_events_after` counts exactly the events `events_after` reads after a seq:
/// none in an empty archive or after the newest; seqs a backend spent on a duplicate
/// are not counted.
pub fn events_after_a_seq_are_counted_exactly(fresh: Fresh<'_>) {
    let a = fresh();
    assert_eq!(a.count_events_after(0).unwrap(), 0, "an empty archive");
    assert_eq!(a.count_events_after(-1).unwrap(), 0);
    let s = source(&*a, "acme");
    let other = source(&*a, "other");
    s.page(&[ev("1", "2024-01-01T00:00:00Z"), ev("2", "2024-01-01T00:00:01Z")]);
    // A duplicate between new events: a backend may spend a seq on it.
    s.page(&[ev("2", "2024-01-01T00:00:01Z"), ev("3", "2024-01-01T00:00:02Z")]);
    other.page(&(4..40).map(|i| ev(&i.to_string(), "2024-01-02T00:00:00Z")).collect::<Vec<_>>());
    s.page(&[ev("1", "2024-01-01T00:00:00Z"), ev("40", "2023-12-31T00:00:00Z")]);
    let all = read(&*a, &EventFilter::default(), Order::OldestFirst, None);
    assert_eq!(all.len(), 40);
    let newest = a.newest_seq().unwrap();
    assert_eq!(a.count_events_after(0).unwrap(), 40);
    assert_eq!(a.count_events_after(newest).unwrap(), 0, "after the newest");
    assert_eq!(a.count_events_after(newest + 100).unwrap(), 0);
    for after in -1..=newest {
        let expected = all.iter().filter(|e| e.seq > after).count() as u64;
        assert_eq!(a.count_events_after(after).unwrap(), expected, "after {after}");
    }
    let read_after = a.events_after(all[10].seq, 1000, &mut |_| Ok(())).unwrap();
    assert_eq!(a.count_events_after(all[10].seq).unwrap(), read_after);
}
