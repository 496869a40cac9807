//! Reading events: filters, order, keyset pages, `events_after`, summaries, dedupe.

use std::collections::BTreeMap;

use serde_json::json;
use tfaudit_store::{EventFilter, EventKey, Order, PageOutcome, Pattern};

use crate::{Fresh, at, ev, ids, read, source};

fn p(text: &str) -> Option<Pattern> {
    Some(Pattern::new(text))
}

/// Shorthand for the ids a filter finds, oldest first.
fn find(store: &dyn tfaudit_store::Store, edit: impl FnOnce(&mut EventFilter)) -> Vec<String> {
    let mut filter = EventFilter::default();
    edit(&mut filter);
    ids(store, &filter)
}

const NONE: [&str; 0] = [];

/// `*` is any run of characters (also none), `?` exactly one; `[`, `]`, `%`, `_` and
/// `.` are literal (a backend must not pass them to its own GLOB, LIKE or regex).
pub fn globs_know_star_and_question_mark_and_nothing_else(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[
        ev("1", "2024-01-01T00:00:00Z").resource("ws-[a]1"),
        ev("2", "2024-01-01T00:00:01Z").resource("ws-a1"),
        ev("3", "2024-01-01T00:00:02Z").resource("ws-%_1"),
        ev("4", "2024-01-01T00:00:03Z").resource("ws-ab1"),
        ev("5", "2024-01-01T00:00:04Z").resource("ws-"),
    ]);
    assert_eq!(find(&*a, |f| f.resource_id = p("ws-*")), ["1", "2", "3", "4", "5"], "* matches the empty run too");
    assert_eq!(find(&*a, |f| f.resource_id = p("ws-?1")), ["2"], "? is exactly one character");
    assert_eq!(find(&*a, |f| f.resource_id = p("ws-??1")), ["3", "4"]);
    assert_eq!(find(&*a, |f| f.resource_id = p("ws-[a]*")), ["1"], "[ is literal, not a character class");
    assert_eq!(find(&*a, |f| f.resource_id = p("ws-[a]1")), ["1"]);
    assert_eq!(find(&*a, |f| f.resource_id = p("ws-%_*")), ["3"], "SQL LIKE wildcards are literal");
    assert_eq!(find(&*a, |f| f.resource_id = p("*1")), ["1", "2", "3", "4"]);
    assert_eq!(find(&*a, |f| f.resource_id = p("ws-.1")), NONE, ". is literal");
    assert_eq!(find(&*a, |f| f.resource_type = p("r?n")), ["1", "2", "3", "4", "5"]);
    assert_eq!(find(&*a, |f| f.action = p("app*")), ["1", "2", "3", "4", "5"]);
    assert_eq!(find(&*a, |f| f.action = p("app")), NONE, "a pattern matches the whole value");
}

/// Actor (accessor id or description) and free text ignore case by Unicode simple case
/// folding: non-ASCII letters too, but no one-to-many folds (`ß` is not `SS`).
pub fn actor_and_text_ignore_case_by_simple_unicode_folding(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[
        ev("1", "2024-01-01T00:00:00Z").actor("user-ÄLI", "älice").note("Hauptstraße"),
        ev("2", "2024-01-01T00:00:01Z").actor("user-BOB", "Bob").note("ÉTÉ deploy"),
        ev("3", "2024-01-01T00:00:02Z").actor("team-ci", "ci").note("plain"),
    ]);
    assert_eq!(find(&*a, |f| f.actor = p("ÄLICE")), ["1"], "a description, non-ASCII, by another case");
    assert_eq!(find(&*a, |f| f.actor = p("USER-äli")), ["1"], "an accessor id by another case");
    assert_eq!(find(&*a, |f| f.actor = p("user-*")), ["1", "2"]);
    assert_eq!(find(&*a, |f| f.actor = p("b?B")), ["2"]);
    assert_eq!(find(&*a, |f| f.actor = p("ali")), NONE, "an actor pattern matches the whole value");
    assert_eq!(find(&*a, |f| f.text = Some("HAUPTSTRAẞE".into())), ["1"], "ẞ folds to ß");
    assert_eq!(find(&*a, |f| f.text = Some("STRASSE".into())), NONE, "simple folding: SS is not ß");
    assert_eq!(find(&*a, |f| f.text = Some("été".into())), ["2"]);
    assert_eq!(find(&*a, |f| f.text = Some("PLAIN".into())), ["3"]);
    assert_eq!(find(&*a, |f| f.text = Some("user-".into())), ["1", "2"], "text is found anywhere in the JSON");
    assert_eq!(find(&*a, |f| f.text = Some("*".into())), NONE, "text has no wildcards");
    assert_eq!(find(&*a, |f| f.text = Some(String::new())), ["1", "2", "3"], "empty text matches everything");
}

/// Type, action and resource id match exactly and with case; org is the source's name
/// or the events' organization id, ignoring case.
pub fn type_action_resource_and_org_filters_are_exact(fresh: Fresh<'_>) {
    let a = fresh();
    let acme = source(&*a, "acme");
    let other = source(&*a, "other");
    acme.page(&[
        ev("1", "2024-01-01T00:00:00Z").kind("run", "apply").resource("ws-1"),
        ev("2", "2024-01-01T00:00:01Z").kind("run", "cancel").resource("ws-10"),
        ev("3", "2024-01-01T00:00:02Z").kind("runs", "apply").resource("WS-1"),
    ]);
    other.page(&[ev("4", "2024-01-01T00:00:03Z").kind("var", "apply").resource("ws-1").org("org-2")]);
    assert_eq!(find(&*a, |f| f.resource_type = p("run")), ["1", "2"], "not a prefix match");
    assert_eq!(find(&*a, |f| f.resource_type = p("RUN")), NONE, "type is case-sensitive");
    assert_eq!(find(&*a, |f| f.action = p("apply")), ["1", "3", "4"]);
    assert_eq!(find(&*a, |f| f.action = p("Apply")), NONE, "action is case-sensitive");
    assert_eq!(find(&*a, |f| f.resource_id = p("ws-1")), ["1", "4"], "resource id is case-sensitive, whole value");
    assert_eq!(find(&*a, |f| f.org = p("acme")), ["1", "2", "3"], "by source name");
    assert_eq!(find(&*a, |f| f.org = p("ACME")), ["1", "2", "3"], "org ignores case");
    assert_eq!(find(&*a, |f| f.org = p("org-2")), ["4"], "by organization id");
    assert_eq!(find(&*a, |f| f.org = p("org-*")), ["1", "2", "3", "4"]);
    assert_eq!(find(&*a, |f| f.org = p("nobody")), NONE);
    assert_eq!(find(&*a, |f| f.resource_id = p("nothing")), NONE);
}

/// `since` includes an event at exactly that time, `until` excludes it, to the
/// millisecond; a range with `since` at or after `until` is empty.
pub fn since_is_inclusive_and_until_exclusive(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[
        ev("1", "2024-01-01T09:59:59.999Z"),
        ev("2", "2024-01-01T10:00:00Z"),
        ev("3", "2024-01-01T10:30:00.001Z"),
        ev("4", "2024-01-01T10:59:59.999Z"),
        ev("5", "2024-01-01T11:00:00Z"),
    ]);
    let range = |since: Option<&str>, until: Option<&str>| {
        find(&*a, |f| {
            f.since = since.map(at);
            f.until = until.map(at);
        })
    };
    assert_eq!(range(Some("2024-01-01T10:00:00Z"), Some("2024-01-01T11:00:00Z")), ["2", "3", "4"]);
    assert_eq!(range(Some("2024-01-01T10:00:00.001Z"), None), ["3", "4", "5"]);
    assert_eq!(range(None, Some("2024-01-01T10:00:00.001Z")), ["1", "2"]);
    assert_eq!(range(Some("2024-01-01T10:30:00.001Z"), Some("2024-01-01T10:30:00.002Z")), ["3"], "one millisecond");
    assert_eq!(range(Some("2024-01-01T10:00:00Z"), Some("2024-01-01T10:00:00Z")), NONE, "since = until");
    assert_eq!(range(Some("2024-01-01T11:00:00Z"), Some("2024-01-01T10:00:00Z")), NONE, "since after until");
    assert_eq!(range(Some("2025-01-01T00:00:00Z"), None), NONE, "after every event");
}

/// Every condition set must hold.
pub fn filters_combine_and_all_must_hold(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[
        ev("1", "2024-01-01T00:00:00Z").actor("user-1", "ann").kind("run", "apply").note("prod"),
        ev("2", "2024-01-02T00:00:00Z").actor("user-1", "ann").kind("run", "cancel").note("prod"),
        ev("3", "2024-01-03T00:00:00Z").actor("user-2", "bob").kind("run", "apply").note("prod"),
        ev("4", "2024-01-04T00:00:00Z").actor("user-1", "ann").kind("run", "apply").note("dev"),
        ev("5", "2024-01-05T00:00:00Z").actor("user-1", "ann").kind("run", "apply").note("prod"),
    ]);
    let all = |f: &mut EventFilter| {
        f.actor = p("ANN");
        f.resource_type = p("run");
        f.action = p("apply");
        f.text = Some("PROD".into());
        f.org = p("acme");
        f.resource_id = p("ws-?");
    };
    assert_eq!(find(&*a, all), ["1", "5"]);
    assert_eq!(
        find(&*a, |f| {
            all(f);
            f.until = Some(at("2024-01-05T00:00:00Z"));
        }),
        ["1"]
    );
    assert_eq!(
        find(&*a, |f| {
            all(f);
            f.org = p("other");
        }),
        NONE
    );
}

/// The same event stored again — twice in one page, in a later page, in a later walk,
/// from another source — is a duplicate: counted, never stored twice, and the first
/// copy (its seq, its source) stays.
pub fn an_event_is_stored_once_by_id(fresh: Fresh<'_>) {
    let a = fresh();
    let acme = source(&*a, "acme");
    let e1 = ev("e1", "2024-01-01T00:00:00Z");
    let e2 = ev("e2", "2024-01-01T00:00:01Z");
    assert_eq!(
        acme.page(&[e1.clone(), e1.clone(), e2.clone()]),
        PageOutcome { inserted: 2, duplicates: 1, rejected: 0 }
    );
    let first = a.event("e1").unwrap().expect("stored");
    assert_eq!(acme.page(&[e2.clone(), e1.clone()]), PageOutcome { inserted: 0, duplicates: 2, rejected: 0 });
    // A later walk: the cursor moved, a new run re-reads an overlapping window.
    a.finish_walk(acme.source.id, Some(at("2024-01-01T00:00:01Z")), None, None).unwrap();
    let again = source(&*a, "acme");
    assert_ne!(again.run, acme.run);
    let e3 = ev("e3", "2024-01-01T00:00:02Z");
    assert_eq!(again.page(&[e2.clone(), e3]), PageOutcome { inserted: 1, duplicates: 1, rejected: 0 });
    let other = source(&*a, "other");
    assert_eq!(other.page(&[e1]), PageOutcome { inserted: 0, duplicates: 1, rejected: 0 });
    assert_eq!(ids(&*a, &EventFilter::default()), ["e1", "e2", "e3"]);
    assert_eq!(a.event("e1").unwrap(), Some(first), "the first copy stays as it was");
    let status = a.status().unwrap();
    let counts: Vec<(&str, u64)> = status.iter().map(|s| (s.name.as_str(), s.events)).collect();
    assert_eq!(counts, [("acme", 3), ("other", 0)]);
    let last = status[0].last_run.as_ref().expect("a run");
    assert_eq!((last.tally.pages, last.tally.new_events, last.tally.duplicates), (1, 1, 1), "counted per run");
}

/// An event comes back with its raw text byte for byte and its fields as parsed.
pub fn events_come_back_as_stored(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    let text = "{\"id\":\"u\",\"timestamp\":\"2024-01-01T00:00:00.120Z\",\"version\":\"0\",\"x\":1.50e3,\
                \"s\":\"日本 \\u001b[31m \\u0000\",\"auth\":{\"accessor_id\":\"user-1\",\"organization_id\":\"org-9\"}}";
    let event =
        tfaudit_model::AuditEvent::parse(&serde_json::value::RawValue::from_string(text.into()).unwrap()).unwrap();
    s.page_with(std::slice::from_ref(&event), &[], &crate::walk(2));
    let stored = a.event("u").unwrap().expect("stored");
    assert_eq!(stored.event, event, "every field, the raw text byte for byte");
    assert_eq!(stored.source, "acme");
    assert_eq!(a.event("missing").unwrap(), None);
    assert_eq!(a.status().unwrap()[0].organization_id.as_deref(), Some("org-9"), "learnt from its events");
}

/// Newest first is time descending then seq descending; oldest first the reverse;
/// `limit` cuts after ordering.
pub fn newest_and_oldest_first_with_limit_and_ties_by_seq(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    // Stored out of time order, three at the same instant: ties follow storage order.
    s.page(&[ev("t2-a", "2024-01-02T00:00:00Z"), ev("t1", "2024-01-01T00:00:00Z"), ev("t2-b", "2024-01-02T00:00:00Z")]);
    s.page(&[ev("t3", "2024-01-03T00:00:00Z"), ev("t2-c", "2024-01-02T00:00:00Z")]);
    let order = |order: Order, limit: Option<u64>| -> Vec<String> {
        read(&*a, &EventFilter::default(), order, limit).into_iter().map(|e| e.event.id).collect()
    };
    assert_eq!(order(Order::OldestFirst, None), ["t1", "t2-a", "t2-b", "t2-c", "t3"]);
    assert_eq!(order(Order::NewestFirst, None), ["t3", "t2-c", "t2-b", "t2-a", "t1"]);
    assert_eq!(order(Order::NewestFirst, Some(2)), ["t3", "t2-c"]);
    assert_eq!(order(Order::OldestFirst, Some(3)), ["t1", "t2-a", "t2-b"]);
    assert_eq!(order(Order::OldestFirst, Some(0)), NONE, "a limit of 0 reads nothing");
    let seqs: Vec<i64> = read(&*a, &EventFilter::default(), Order::OldestFirst, None).iter().map(|e| e.seq).collect();
    let by_id = |id: &str| a.event(id).unwrap().unwrap().seq;
    assert!(by_id("t2-a") < by_id("t1") && by_id("t1") < by_id("t2-b"), "seq follows storage order: {seqs:?}");
}

/// Reading newest first in pages of `before = (time, seq)` of the last event read
/// yields every matching event exactly once, also across ties, also while events
/// are added between pages.
pub fn keyset_pages_read_every_event_once(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    let times = ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z"];
    let events: Vec<_> =
        (0..9).map(|i| ev(&format!("k{i}"), times[i % 3]).kind(if i == 4 { "var" } else { "run" }, "apply")).collect();
    s.page(&events);
    let mut filter = EventFilter { resource_type: p("run"), ..EventFilter::default() };
    let mut got = Vec::new();
    loop {
        let page = read(&*a, &filter, Order::NewestFirst, Some(2));
        if got.is_empty() {
            // Arrives after the first page was read: newer than it, so not in later pages.
            s.page(&[ev("late", "2024-01-02T00:00:00Z")]);
        }
        let Some(last) = page.last() else { break };
        filter.before = Some((last.event.timestamp, last.seq));
        got.extend(page.into_iter().map(|e| e.event.id));
    }
    assert_eq!(got, ["k8", "k5", "k2", "k7", "k6", "k3", "k1", "k0"]);
    let seq_k1 = a.event("k1").unwrap().unwrap().seq;
    let before = EventFilter { before: Some((at("2024-01-01T00:00:00Z"), seq_k1)), ..EventFilter::default() };
    assert_eq!(ids(&*a, &before), ["k0"], "strictly before the (time, seq) position");
}

/// `events_after(seq)` reads the events stored after `seq`, in seq order (storage
/// order, whatever their times), at most `limit`; `newest_seq` is the last one's.
pub fn events_after_read_in_seq_order(fresh: Fresh<'_>) {
    let a = fresh();
    assert_eq!(a.newest_seq().unwrap(), 0, "an empty archive");
    let s = source(&*a, "acme");
    s.page(&[ev("b", "2024-01-02T00:00:00Z"), ev("a", "2024-01-01T00:00:00Z")]);
    s.page(&[ev("c", "2023-12-31T00:00:00Z"), ev("b", "2024-01-02T00:00:00Z")]);
    let after = |seq: i64, limit: u64| {
        let mut out = Vec::new();
        let n = a
            .events_after(seq, limit, &mut |e| {
                out.push((e.seq, e.event.id));
                Ok(())
            })
            .unwrap();
        assert_eq!(n, out.len() as u64);
        out
    };
    let all = after(0, 100);
    let names: Vec<&str> = all.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(names, ["b", "a", "c"], "storage order, not time order; a duplicate is not read again");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "seq increases: {all:?}");
    assert_eq!(a.newest_seq().unwrap(), all[2].0);
    assert_eq!(after(all[0].0, 100), all[1..].to_vec(), "after is exclusive");
    assert_eq!(after(0, 2), all[..2].to_vec());
    assert_eq!(after(all[2].0, 100), vec![], "nothing after the newest");
    // The same events' bytes alone, with their source's name, as the integrity tree reads them.
    let other = source(&*a, "beta");
    other.page(&[ev("d", "2024-01-03T00:00:00Z").note("ünïcode ✓")]);
    let bytes = |seq: i64, limit: u64| {
        let mut out = Vec::new();
        let n = a
            .event_bytes_after(seq, limit, &mut |seq, source, raw| {
                out.push((seq, source.to_owned(), raw.to_owned()));
                Ok(())
            })
            .unwrap();
        assert_eq!(n, out.len() as u64);
        out
    };
    let mut whole = Vec::new();
    a.events_after(0, 100, &mut |e| {
        whole.push((e.seq, e.source, e.event.raw));
        Ok(())
    })
    .unwrap();
    assert_eq!(whole.len(), 4);
    assert_eq!(bytes(0, 100), whole);
    assert_eq!(bytes(whole[0].0, 2), whole[1..3].to_vec());
}

/// A summary equals counting the same events one by one: over all time, over ranges
/// that start and end inside an hour (and inside one hour), and with a filter that
/// precomputed counts cannot answer.
pub fn summary_equals_counting_the_events(fresh: Fresh<'_>) {
    let a = fresh();
    let acme = source(&*a, "acme");
    let other = source(&*a, "other");
    let kinds = [("run", "apply"), ("var", "update"), ("authentication_token", "create")];
    let start = at("2024-01-01T22:00:00Z");
    let mut events = Vec::new();
    for i in 0..300i64 {
        // Every 7 min 17.5 s: about 8 events an hour, across three UTC days.
        let t = start + jiff::SignedDuration::from_millis(i * 437_500);
        let (rtype, action) = kinds[(i % 3) as usize];
        let actor = i * i % 5;
        events.push((
            i % 4 == 0,
            ev(&format!("s{i}"), &t.to_string())
                .kind(rtype, action)
                .actor(&format!("user-{actor}"), &format!("u{actor}")),
        ));
    }
    let (to_other, to_acme): (Vec<_>, Vec<_>) = events.iter().partition(|(in_other, _)| *in_other);
    other.page(&to_other.into_iter().map(|(_, e)| e.clone()).collect::<Vec<_>>());
    acme.page(&to_acme.into_iter().map(|(_, e)| e.clone()).collect::<Vec<_>>());
    let ranges = [
        (None, None),
        (Some("2024-01-01T22:31:00Z"), Some("2024-01-02T23:59:59.999Z")),
        (Some("2024-01-02T00:00:00Z"), Some("2024-01-03T00:00:00Z")),
        (Some("2024-01-02T05:10:00Z"), Some("2024-01-02T05:50:00Z")),
        (Some("2024-01-02T05:10:00Z"), None),
        (None, Some("2024-01-02T05:10:00Z")),
        // Partial hours, whole hours of a partial day, a whole day, and the same at
        // the other end (a backend may keep daily counts beside hourly ones).
        (Some("2024-01-01T22:31:00Z"), Some("2024-01-03T05:10:00Z")),
    ];
    for (since, until) in ranges {
        for (org, actor) in [(None, None), (Some("other"), None), (None, Some("user-1")), (Some("acme"), Some("U4"))] {
            let filter = EventFilter {
                since: since.map(at),
                until: until.map(at),
                org: org.map(Pattern::new),
                actor: actor.map(Pattern::new),
                ..EventFilter::default()
            };
            let got = a.summary(&filter, 2).unwrap();
            let built: Vec<_> = events.iter().map(|(o, e)| (*o, e.build())).collect();
            let matching: Vec<_> = built
                .iter()
                .filter(|(in_other, e)| {
                    filter.since.is_none_or(|s| e.timestamp >= s)
                        && filter.until.is_none_or(|u| e.timestamp < u)
                        && org.is_none_or(|o| (o == "other") == *in_other)
                        && actor.is_none_or(|x| {
                            e.accessor_id.as_deref().unwrap().eq_ignore_ascii_case(x)
                                || e.auth_description.as_deref().unwrap().eq_ignore_ascii_case(x)
                        })
                })
                .map(|(_, e)| e)
                .collect();
            let mut kinds: BTreeMap<(String, String), u64> = BTreeMap::new();
            let mut actors: BTreeMap<String, (u64, String)> = BTreeMap::new();
            let mut days: BTreeMap<String, u64> = BTreeMap::new();
            let mut hours: BTreeMap<String, u64> = BTreeMap::new();
            for e in &matching {
                *kinds.entry((e.resource_type.clone().unwrap(), e.resource_action.clone().unwrap())).or_default() += 1;
                let who = actors.entry(e.accessor_id.clone().unwrap()).or_default();
                who.0 += 1;
                who.1 = e.auth_description.clone().unwrap();
                *days.entry(e.timestamp.strftime("%Y-%m-%d").to_string()).or_default() += 1;
                *hours.entry(e.timestamp.strftime("%Y-%m-%dT%H:00Z").to_string()).or_default() += 1;
            }
            let mut by_kind: Vec<_> = kinds.into_iter().map(|((t, a), n)| (t, a, n)).collect();
            by_kind.sort_by(|x, y| y.2.cmp(&x.2).then_with(|| (&x.0, &x.1).cmp(&(&y.0, &y.1))));
            by_kind.truncate(2);
            let mut top: Vec<_> = actors.into_iter().map(|(id, (n, d))| (id, Some(d), n)).collect();
            top.sort_by(|x, y| y.2.cmp(&x.2).then_with(|| x.0.cmp(&y.0)));
            top.truncate(2);
            let case = format!("since {since:?} until {until:?} org {org:?} actor {actor:?}");
            assert_eq!(got.total, matching.len() as u64, "{case}");
            let got_kinds: Vec<_> =
                got.by_kind.iter().map(|k| (k.resource_type.clone(), k.action.clone(), k.count)).collect();
            assert_eq!(got_kinds, by_kind, "{case}");
            let got_top: Vec<_> =
                got.top_actors.iter().map(|k| (k.accessor_id.clone(), k.description.clone(), k.count)).collect();
            assert_eq!(got_top, top, "{case}");
            let got_days: Vec<_> = got.per_day.iter().map(|d| (d.day.clone(), d.count)).collect();
            assert_eq!(got_days, days.into_iter().collect::<Vec<_>>(), "{case}");
            let got_hours: Vec<_> = got.per_hour.iter().map(|d| (d.day.clone(), d.count)).collect();
            assert_eq!(got_hours, hours.into_iter().collect::<Vec<_>>(), "{case}");
            assert_eq!((got.since, got.until), (filter.since, filter.until), "{case}");
        }
    }
}

/// Untrusted text is kept whatever it holds: a NUL character (which some databases'
/// text columns refuse) or control characters in any field of an event or a rejected
/// element store, come back exactly, and are found by exact filters; nothing of the
/// page is lost for it. Left to the backend: how names in summaries, reasons and alert
/// texts show a NUL (PostgreSQL shows U+FFFD), and whether a filter naming U+FFFD
/// also finds a NUL.
pub fn nul_and_control_characters_in_fields_are_kept_and_found(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    let hostile = ev("id-\0-\u{1b}[2J", "2024-01-01T00:00:00Z")
        .actor("user-\0", "al\0ice\u{202e}")
        .kind("run\0", "apply\0")
        .resource("ws-\0\u{7}")
        .org("org-\0")
        .impersonator("user-\0imp")
        .note("note \0 \r\n");
    let plain = ev("plain", "2024-01-01T00:00:01Z");
    let rejected = tfaudit_model::RejectedEvent { raw: "{\"id\":\"\0\"".into(), reason: "bad \0 element".into() };
    let events = [hostile.build(), plain.build()];
    let outcome = s.page_with(&events, std::slice::from_ref(&rejected), &crate::walk(2));
    assert_eq!((outcome.inserted, outcome.rejected), (2, 1), "the whole page is stored");
    let stored = a.event("id-\0-\u{1b}[2J").unwrap().expect("found by its exact id");
    assert_eq!(stored.event, events[0], "every field and the raw text exactly");
    assert_eq!(find(&*a, |f| f.resource_id = p("ws-\0\u{7}")), ["id-\0-\u{1b}[2J"]);
    assert_eq!(find(&*a, |f| f.actor = p("AL\0ICE\u{202e}")), ["id-\0-\u{1b}[2J"]);
    assert_eq!(find(&*a, |f| f.resource_type = p("run\0")), ["id-\0-\u{1b}[2J"]);
    // The source learnt its organization id from the first event: both are its events.
    assert_eq!(find(&*a, |f| f.org = p("org-\0")), ["id-\0-\u{1b}[2J", "plain"]);
    let kept = a.rejects(10).unwrap();
    assert_eq!(kept[0].raw, rejected.raw, "a rejected element's text exactly");
    assert!(kept[0].reason.starts_with("bad "), "{}", kept[0].reason);
    let summary = a.summary(&EventFilter::default(), 10).unwrap();
    assert_eq!(summary.total, 2);
    assert_eq!(summary.top_actors.len(), 2, "{:?}", summary.top_actors);
}

/// `impersonated` keeps only events with an impersonator, with the other filters.
pub fn impersonated_events_are_found_by_their_impersonator(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[
        ev("1", "2024-01-01T00:00:00Z"),
        ev("2", "2024-01-01T00:00:01Z").impersonator("user-admin"),
        ev("3", "2024-01-01T00:00:02Z").impersonator("user-admin").kind("team", "add_member"),
        ev("4", "2024-01-01T00:00:03Z"),
    ]);
    assert_eq!(find(&*a, |f| f.impersonated = true), ["2", "3"]);
    assert_eq!(find(&*a, |f| (f.impersonated, f.resource_type) = (true, p("team"))), ["3"]);
    let summary = a.summary(&EventFilter { impersonated: true, ..EventFilter::default() }, 10).unwrap();
    assert_eq!(summary.total, 2, "a summary counts only them too");
}

/// `destroy_run` keeps only events whose run destroys (`resource.meta.run.is_destroy`
/// is `true`, as stored), with the other filters; text that only mentions it is not one.
pub fn destroy_runs_are_found_as_their_json_says(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[
        ev("1", "2024-01-01T00:00:00Z").destroy(json!(true)),
        ev("2", "2024-01-01T00:00:01Z").destroy(json!(false)),
        ev("3", "2024-01-01T00:00:02Z"),
        ev("4", "2024-01-01T00:00:03Z").destroy(json!(true)).kind("run", "create"),
        ev("5", "2024-01-01T00:00:04Z").note("\"is_destroy\": true"),
        ev("6", "2024-01-01T00:00:05Z").destroy(json!("true")),
        ev("7", "2024-01-02T00:00:00Z").destroy(json!(true)).org("org-2"),
    ]);
    assert_eq!(find(&*a, |f| f.destroy_run = true), ["1", "4", "7"]);
    assert_eq!(find(&*a, |f| (f.destroy_run, f.action) = (true, p("apply"))), ["1", "7"]);
    assert_eq!(find(&*a, |f| (f.destroy_run, f.org) = (true, p("org-2"))), ["7"]);
    assert_eq!(find(&*a, |f| (f.destroy_run, f.until) = (true, Some(at("2024-01-02T00:00:00Z")))), ["1", "4"]);
    let summary = a.summary(&EventFilter { destroy_run: true, ..EventFilter::default() }, 10).unwrap();
    assert_eq!(summary.total, 3, "a summary counts only them too");
    let mut keys = Vec::new();
    let n = a
        .event_keys(&EventFilter { destroy_run: true, ..EventFilter::default() }, Order::NewestFirst, &mut |k| {
            keys.push(k.resource_id.unwrap_or_default());
            Ok(())
        })
        .unwrap();
    assert_eq!((n, keys), (3, vec!["ws-7".to_owned(), "ws-4".to_owned(), "ws-1".to_owned()]));
}

/// `event_keys` gives, for any filter and in either order, the seq, time and resource
/// id of exactly the events `events` reads.
pub fn event_keys_are_those_of_the_events_read(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[
        ev("1", "2024-01-01T00:00:00Z").kind("authentication_token", "create").resource("at-1"),
        ev("2", "2024-01-01T00:00:00Z").kind("authentication_token", "create").resource("at-2"),
        ev("3", "2024-01-01T00:00:01Z").kind("authentication_token", "destroy").resource("at-1"),
        ev("4", "2024-01-01T00:00:02.500Z").note("Needle").org("org-2"),
        ev("5", "2024-01-03T00:00:00Z").kind("authentication_token", "create").resource("at-\0\u{1b}"),
        ev("6", "2024-01-03T00:00:01Z").destroy(json!(true)).impersonator("user-admin"),
    ]);
    let filters = [
        EventFilter::default(),
        EventFilter { resource_type: p("authentication_token"), action: p("create"), ..EventFilter::default() },
        EventFilter { until: Some(at("2024-01-02T00:00:00Z")), ..EventFilter::default() },
        EventFilter { since: Some(at("2024-01-01T00:00:01Z")), org: p("org-2"), ..EventFilter::default() },
        EventFilter { text: Some("needle".into()), ..EventFilter::default() },
        EventFilter { impersonated: true, ..EventFilter::default() },
        EventFilter { destroy_run: true, ..EventFilter::default() },
    ];
    for filter in &filters {
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let expected: Vec<EventKey> = read(&*a, filter, order, None)
                .into_iter()
                .map(|e| EventKey { seq: e.seq, timestamp: e.event.timestamp, resource_id: e.event.resource_id })
                .collect();
            let mut keys = Vec::new();
            let n = a
                .event_keys(filter, order, &mut |k| {
                    keys.push(k);
                    Ok(())
                })
                .unwrap();
            assert!(!expected.is_empty(), "each filter finds something: {filter:?}");
            assert_eq!(keys, expected, "{filter:?} {order:?}");
            assert_eq!(n, keys.len() as u64);
        }
    }
}
