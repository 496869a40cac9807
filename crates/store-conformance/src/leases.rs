//! Leases: one holder at a time, takeover after expiry with a higher epoch, fenced
//! writes of a former holder refused whole, release, heartbeats.

use std::time::{Duration, Instant};

use tfaudit_store::{EventFilter, Lease, LeaseHolder, Store, StoreError, Walk};

use crate::{Fresh, at, ev, ids, source, walk};

const LONG: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_millis(50);

/// Tries `acquire` until it returns a lease (the other holder's expired), at most
/// 10 seconds.
fn take_when_expired(store: &dyn Store, name: &str, holder: &str) -> Lease {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = store.acquire_lease(name, holder, LONG).expect("acquire_lease") {
            return l;
        }
        assert!(Instant::now() < deadline, "{holder} could not take {name} after it expired");
        std::thread::yield_now();
    }
}

/// A live lease has one holder: another is refused, the holder taking it again keeps
/// its epoch and `since`; names are independent; `leases()` lists what is held.
pub fn a_lease_has_one_holder_at_a_time(fresh: Fresh<'_>) {
    let a = fresh();
    let first = a.acquire_lease("acme", "one", LONG).unwrap().expect("a free lease is taken");
    assert_eq!((first.name.as_str(), first.holder.as_str()), ("acme", "one"));
    assert!(first.expires > first.since, "it expires after it was taken");
    assert_eq!(a.acquire_lease("acme", "two", LONG).unwrap(), None, "held by another, live");
    let again = a.acquire_lease("acme", "one", LONG).unwrap().expect("its holder takes it again");
    assert_eq!((again.epoch, again.since), (first.epoch, first.since), "the same tenure");
    let other = a.acquire_lease("globex", "two", LONG).unwrap().expect("another name is free");
    assert_eq!(other.holder, "two");
    let held: Vec<(String, String)> = a.leases().unwrap().into_iter().map(|l| (l.name, l.holder)).collect();
    assert_eq!(held, [("acme".to_owned(), "one".to_owned()), ("globex".to_owned(), "two".to_owned())]);
    assert!(a.renew_lease(&first, LONG).unwrap(), "the holder renews");
}

/// An expired lease is taken over with a higher epoch; the former holder can then
/// neither renew it nor take it back while the new one is live.
pub fn an_expired_lease_is_taken_over_with_a_higher_epoch(fresh: Fresh<'_>) {
    let a = fresh();
    let old = a.acquire_lease("acme", "one", SHORT).unwrap().expect("free");
    let new = take_when_expired(&*a, "acme", "two");
    assert!(new.epoch > old.epoch, "a takeover raises the epoch ({} -> {})", old.epoch, new.epoch);
    assert!(!a.renew_lease(&old, LONG).unwrap(), "the former holder's renewal fails");
    assert_eq!(a.acquire_lease("acme", "one", LONG).unwrap(), None, "the new holder's lease is live");
    assert!(a.renew_lease(&new, LONG).unwrap());
    let other = a.acquire_lease("globex", "one", LONG).unwrap().expect("free");
    assert_eq!(
        a.renew_leases(&[old.clone(), new.clone(), other.clone()], LONG).unwrap(),
        [false, true, true],
        "renewed together, each as if alone"
    );
    assert_eq!(a.renew_leases(&[], LONG).unwrap(), Vec::<bool>::new());
    a.release_lease(&other).unwrap();
    assert_eq!(a.leases().unwrap(), [Lease { expires: a.leases().unwrap()[0].expires, ..new }]);
}

/// A page or a walk's completion fenced with a former holder's epoch stores nothing
/// at all (no event, no progress, no cursor) and fails with `LeaseLost`; the same
/// writes fenced by the current holder go through.
pub fn a_write_fenced_by_a_former_holder_stores_nothing(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    let old = a.acquire_lease("acme", "one", SHORT).unwrap().expect("free");
    let events = [ev("1", "2024-01-01T00:00:00Z").build()];
    let write = |events, w: &Walk, fence: &Lease| {
        a.store_page_fenced(
            &tfaudit_store::PageWrite {
                source_id: s.source.id,
                run_id: s.run,
                pages: 1,
                events,
                rejects: &[],
                walk: w,
            },
            Some(&fence.fence()),
        )
    };
    write(&events, &walk(2), &old).expect("the holder's page is stored");
    let new = take_when_expired(&*a, "acme", "two");
    let late = [ev("2", "2024-01-01T00:00:01Z").build()];
    match write(&late, &walk(3), &old) {
        Err(StoreError::LeaseLost { name }) => assert_eq!(name, "acme"),
        other => panic!("a stale page must fail with LeaseLost, got {other:?}"),
    }
    assert_eq!(ids(&*a, &EventFilter::default()), ["1"], "no event of the stale page");
    assert_eq!(a.source("acme", "x").unwrap().walk, Some(walk(2)), "nor its progress");
    let cursor = at("2024-01-01T00:00:01Z");
    let stale = a.finish_walk_fenced(s.source.id, Some(cursor), None, None, Some(&old.fence()));
    assert!(matches!(stale, Err(StoreError::LeaseLost { .. })), "a stale finish_walk fails: {stale:?}");
    let src = a.source("acme", "x").unwrap();
    assert_eq!((src.cursor, src.walk), (None, Some(walk(2))), "the cursor has not moved");
    write(&late, &walk(3), &new).expect("the new holder's page is stored");
    a.finish_walk_fenced(s.source.id, Some(cursor), None, None, Some(&new.fence())).expect("the new holder finishes");
    assert_eq!(ids(&*a, &EventFilter::default()), ["1", "2"]);
    assert_eq!(a.source("acme", "x").unwrap().cursor, Some(cursor));
}

/// Releasing frees the lease at once (another takes it with a higher epoch) and
/// fences the releaser off; a former holder's release does not free the new holder's.
pub fn a_released_lease_is_free_at_once(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    let one = a.acquire_lease("acme", "one", LONG).unwrap().expect("free");
    a.release_lease(&one).unwrap();
    assert_eq!(a.leases().unwrap(), [], "a released lease is not held");
    assert!(!a.renew_lease(&one, LONG).unwrap(), "nor can it be renewed");
    let two = a.acquire_lease("acme", "two", LONG).unwrap().expect("free at once");
    assert!(two.epoch > one.epoch);
    let stale = a.finish_walk_fenced(s.source.id, Some(at("2024-01-01T00:00:00Z")), None, None, Some(&one.fence()));
    assert!(matches!(stale, Err(StoreError::LeaseLost { .. })), "{stale:?}");
    a.release_lease(&one).unwrap();
    assert_eq!(a.leases().unwrap().len(), 1, "a former holder's release changes nothing");
    let back = a.acquire_lease("acme", "one", LONG).unwrap();
    assert_eq!(back, None, "two still holds it");
}

/// `status` shows who holds each organization's lease and since when.
pub fn status_shows_each_organizations_lease_holder(fresh: Fresh<'_>) {
    let a = fresh();
    source(&*a, "acme");
    source(&*a, "globex");
    let held = a.acquire_lease("acme", "node-1", LONG).unwrap().expect("free");
    let status = a.status().unwrap();
    assert_eq!(status[0].name, "acme");
    assert_eq!(status[0].lease, Some(LeaseHolder { holder: "node-1".into(), since: held.since }));
    assert_eq!(status[1].lease, None, "nobody holds globex");
}

/// Heartbeats make an instance live until their ttl ends.
pub fn instances_are_live_until_their_heartbeat_expires(fresh: Fresh<'_>) {
    let a = fresh();
    assert_eq!(a.live_instances().unwrap(), Vec::<String>::new());
    a.heartbeat("b", LONG).unwrap();
    a.heartbeat("a", LONG).unwrap();
    a.heartbeat("gone", SHORT).unwrap();
    a.heartbeat("a", LONG).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = a.live_instances().unwrap();
        if live == ["a", "b"] {
            break;
        }
        assert!(Instant::now() < deadline, "the short heartbeat never expired: {live:?}");
        assert!(live.contains(&"a".to_owned()) && live.contains(&"b".to_owned()), "{live:?}");
        std::thread::yield_now();
    }
    a.heartbeat("b", Duration::ZERO).unwrap();
    assert_eq!(a.live_instances().unwrap(), ["a"], "a heartbeat with no time left ends at once");
}
