//! What a sync writes: pages with the walk's progress, completed walks, gaps, rejects.

use tfaudit_model::RejectedEvent;
use tfaudit_store::{EventFilter, Gap, PageOutcome, RunCounts, RunResult, Walk};

use crate::{Fresh, at, ev, ids, source, walk};

/// A stored page is visible with the walk's progress saved with it: `source()` (what a
/// run after a crash reads first) returns the walk exactly as the last page left it,
/// so the next run goes on from its next page. The cursor does not move until the
/// walk is finished.
pub fn a_page_and_the_walk_progress_are_stored_together(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    assert_eq!(s.source.walk, None, "a new source has no walk in progress");
    assert_eq!(s.source.cursor, None);
    s.page(&[ev("1", "2024-01-01T00:00:00Z")]);
    let page3 = Walk { next_page: 3, gap_from: Some(at("2023-12-01T00:00:00.5Z")), ..walk(2) };
    let out = s.page_with(&[ev("2", "2024-01-01T00:00:01Z").build()], &[], &page3);
    assert_eq!(out, PageOutcome { inserted: 1, duplicates: 0, rejected: 0 });
    let resumed = a.source("acme", "https://app.terraform.io").unwrap();
    assert_eq!(resumed.id, s.source.id, "the same source, by name");
    assert_eq!(resumed.walk, Some(page3.clone()), "every field of the last page's progress");
    assert_eq!(resumed.cursor, None, "storing pages does not move the cursor");
    assert_eq!(ids(&*a, &EventFilter::default()), ["1", "2"]);
    assert_eq!(a.status().unwrap()[0].walk_in_progress, Some(page3));
    // A page of nothing but duplicates still records the walk's progress.
    let page4 = Walk { next_page: 4, ..walk(2) };
    s.page_with(&[ev("2", "2024-01-01T00:00:01Z").build()], &[], &page4);
    assert_eq!(a.source("acme", "https://app.terraform.io").unwrap().walk, Some(page4));
}

/// `finish_walk` clears the walk and moves the cursor forward only: an older cursor or
/// none leaves it; `reconciled` is kept when a walk did not re-read the window.
pub fn finishing_a_walk_never_moves_the_cursor_backwards(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[ev("1", "2024-02-01T00:00:00Z")]);
    let (early, late) = (at("2024-01-01T00:00:00Z"), at("2024-02-01T00:00:00Z"));
    a.finish_walk(s.source.id, Some(late), None, Some(late)).unwrap();
    let src = a.source("acme", "x").unwrap();
    assert_eq!((src.cursor, src.reconciled, src.walk), (Some(late), Some(late), None));
    s.page(&[]);
    a.finish_walk(s.source.id, Some(early), None, None).unwrap();
    a.finish_walk(s.source.id, None, None, None).unwrap();
    let src = a.source("acme", "x").unwrap();
    assert_eq!((src.cursor, src.reconciled, src.walk), (Some(late), Some(late), None));
    assert_eq!(src.address, "x", "the address follows the configuration");
    let later = at("2024-03-01T00:00:00.001Z");
    a.finish_walk(s.source.id, Some(later), None, Some(early)).unwrap();
    let src = a.source("acme", "x").unwrap();
    assert_eq!((src.cursor, src.reconciled), (Some(later), Some(early)), "reconciled is when the last reconcile began");
    assert_eq!(a.status().unwrap()[0].cursor, Some(later));
    let other = source(&*a, "other");
    assert_eq!(other.source.cursor, None, "cursors are per source");
}

/// A gap is recorded with the walk that found it and listed, per source, oldest first.
pub fn gaps_are_recorded_and_listed(fresh: Fresh<'_>) {
    let a = fresh();
    let acme = source(&*a, "acme");
    let other = source(&*a, "other");
    let gap = |source: &str, from: &str, to: &str| Gap {
        source: source.into(),
        from: at(from),
        to: at(to),
        detected_at: at("2024-06-01T00:00:00.25Z"),
    };
    let later = gap("acme", "2024-03-01T00:00:00Z", "2024-03-05T00:00:00Z");
    let earlier = gap("acme", "2024-01-01T00:00:00Z", "2024-01-02T12:00:00.5Z");
    a.finish_walk(acme.source.id, Some(at("2024-03-06T00:00:00Z")), Some(&later), None).unwrap();
    a.finish_walk(acme.source.id, None, Some(&earlier), None).unwrap();
    a.finish_walk(other.source.id, None, None, None).unwrap();
    let status = a.status().unwrap();
    let gaps: Vec<(&str, Vec<Gap>)> = status.iter().map(|s| (s.name.as_str(), s.gaps.clone())).collect();
    assert_eq!(gaps, [("acme", vec![earlier, later]), ("other", vec![])]);
}

/// A rejected element is kept once per source by its text, however often it comes
/// again (counted in `times_seen`); `rejects(limit)` lists the newest first, at most
/// `limit`; a page's outcome counts only rejects not seen before.
pub fn rejects_are_kept_once_by_text_and_listed_newest_first(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    let reject = |raw: &str| RejectedEvent { raw: raw.into(), reason: format!("bad {raw}") };
    let (junk, worse, third) = (reject("\"junk\""), reject("[1]"), reject("{\"id\":1}"));
    let w = walk(2);
    assert_eq!(s.page_with(&[], &[junk.clone(), junk.clone()], &w).rejected, 1, "twice in one page");
    assert_eq!(s.page_with(&[], &[junk.clone(), worse.clone()], &w).rejected, 1);
    assert_eq!(s.page_with(&[], std::slice::from_ref(&third), &w).rejected, 1);
    let listed: Vec<(String, String, u64)> =
        a.rejects(10).unwrap().into_iter().map(|r| (r.raw, r.reason, r.times_seen)).collect();
    assert_eq!(
        listed,
        [
            (third.raw.clone(), third.reason.clone(), 1),
            (worse.raw.clone(), worse.reason.clone(), 1),
            (junk.raw.clone(), junk.reason.clone(), 3)
        ]
    );
    let capped: Vec<String> = a.rejects(2).unwrap().into_iter().map(|r| r.raw).collect();
    assert_eq!(capped, [third.raw.clone(), worse.raw.clone()]);
    assert_eq!(a.rejects(0).unwrap(), vec![]);
    assert_eq!(a.rejects(1).unwrap()[0].source, "acme");
    assert_eq!(a.status().unwrap()[0].rejects, 3);
    let run = a.status().unwrap()[0].last_run.clone().expect("a run");
    assert_eq!(run.tally.rejects, 3, "new rejects, counted with the run");
}

/// A page or a walk's completion for a source id that `source()` never returned is an
/// error and stores nothing — none of the page's events, rejects or progress, no gap:
/// a page is all or nothing.
pub fn a_write_for_an_unknown_source_fails_and_stores_nothing(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[ev("1", "2024-01-01T00:00:00Z")]);
    let seq = a.newest_seq().unwrap();
    let unknown = s.source.id + 1000;
    let page = tfaudit_store::PageWrite {
        source_id: unknown,
        run_id: s.run,
        pages: 1,
        events: &[ev("2", "2024-01-01T00:00:01Z").build()],
        rejects: &[RejectedEvent { raw: "[]".into(), reason: "not an object".into() }],
        walk: &walk(7),
    };
    assert!(a.store_page(&page).is_err(), "an unknown source");
    let gap = Gap {
        source: "acme".into(),
        from: at("2023-01-01T00:00:00Z"),
        to: at("2023-02-01T00:00:00Z"),
        detected_at: at("2024-06-01T00:00:00Z"),
    };
    assert!(a.finish_walk(unknown, Some(at("2025-01-01T00:00:00Z")), Some(&gap), None).is_err());
    assert_eq!(a.newest_seq().unwrap(), seq, "no event stored");
    assert_eq!(a.event("2").unwrap(), None);
    assert_eq!(a.rejects(10).unwrap(), vec![]);
    let status = a.status().unwrap();
    assert_eq!(status.len(), 1, "no source made up");
    assert_eq!(
        (status[0].events, status[0].gaps.clone(), status[0].walk_in_progress.clone()),
        (1, vec![], Some(walk(2)))
    );
    assert_eq!(status[0].last_run.as_ref().map(|r| r.tally.pages), Some(1), "the run counts only the stored page");
    // The event can still be stored by its own source: the failed page left no trace.
    assert_eq!(s.page(&[ev("2", "2024-01-01T00:00:01Z")]).inserted, 1);
}

/// `run_totals` lists every source by name with its runs started in `[since, until)`
/// counted by how they ended (unfinished ones too), its latest successful run that
/// ended before `until`, and the range's failed runs newest first, at most as many as
/// asked for with their errors. (Runs end at the time `finish_run` is called.)
pub fn runs_are_counted_per_source_over_a_range(fresh: Fresh<'_>) {
    let a = fresh();
    let acme = source(&*a, "acme"); // one run started 2024-06-01, never finished
    let quiet = source(&*a, "quiet");
    a.finish_run(quiet.run, &RunResult::Ok, RunCounts::default()).unwrap();
    let run = |started: &str, result: RunResult| {
        let id = a.start_run(acme.source.id, at(started)).unwrap();
        a.finish_run(id, &result, RunCounts { requests: 3, retries: 1 }).unwrap();
        id
    };
    run("2024-05-31T23:59:59.999Z", RunResult::Failed("before the range".into()));
    run("2024-06-02T00:00:00Z", RunResult::Ok);
    let first = run("2024-06-03T00:00:00Z", RunResult::Failed("HTTP 500 <x>".into()));
    run("2024-06-04T00:00:00Z", RunResult::Interrupted);
    let second = run("2024-06-05T00:00:00Z", RunResult::Failed("timeout".into()));
    run("2024-06-06T00:00:00Z", RunResult::Failed("after the range".into()));
    let totals = a.run_totals(Some(at("2024-06-01T00:00:00Z")), Some(at("2024-06-06T00:00:00Z")), 10).unwrap();
    let names: Vec<&str> = totals.iter().map(|t| t.source.as_str()).collect();
    assert_eq!(names, ["acme", "quiet"]);
    let acme_totals = &totals[0];
    assert_eq!(
        (acme_totals.runs, acme_totals.ok, acme_totals.failed, acme_totals.interrupted, acme_totals.unfinished),
        (5, 1, 2, 1, 1)
    );
    let failed: Vec<(i64, Option<RunResult>)> = acme_totals.failures.iter().map(|r| (r.id, r.result.clone())).collect();
    assert_eq!(
        failed,
        [(second, Some(RunResult::Failed("timeout".into()))), (first, Some(RunResult::Failed("HTTP 500 <x>".into())))]
    );
    assert_eq!(acme_totals.failures[0].started_at, at("2024-06-05T00:00:00Z"));
    assert_eq!(acme_totals.failures[0].tally.requests, 3);
    // Every run here ended now: none ended before a range ending in 2024, all before one
    // with no end.
    assert_eq!(acme_totals.last_ok, None);
    assert_eq!((totals[1].runs, totals[1].ok), (1, 1), "quiet's one run started at the range's start: counted");
    let open = a.run_totals(None, None, 1).unwrap();
    assert_eq!(open[0].runs, 7);
    assert_eq!(open[0].failures.len(), 1, "at most as many failures as asked for");
    assert!(open[0].last_ok.is_some() && open[1].last_ok.is_some());
    assert_eq!(open[1].ok, 1);
}
