//! `tfaudit demo`, the README's first command, end to end.

use crate::harness::*;

fn section<'a>(out: &'a str, heading: &str) -> &'a str {
    let start = out.find(heading).unwrap_or_else(|| panic!("no {heading:?} in:\n{out}"));
    let rest = &out[start + heading.len()..];
    &rest[..rest.find("\n== ").unwrap_or(rest.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_to_completion_prints_status_summary_and_queries_and_leaves_no_files() {
    let env = Env::new();
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = env.command(None, &["demo", "--events", "500"]).env("TMPDIR", &tmp).output().await.unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));

    let first = section(&stdout, "== 1. First sync: backfill the whole retention window ==");
    // Three of the 500 elements are malformed on purpose: kept aside as rejects.
    assert!(first.contains("demo-org: 497 new events, 0 already stored"), "{first}");
    assert!(first.contains("3 rejected"), "the malformed elements: {first}");
    let second = section(&stdout, "== 2. Five new events arrive");
    assert!(second.contains("demo-org: 5 new events"), "{second}");
    let status = section(&stdout, "== 3. Status ==");
    assert!(status.contains("tfaudit --db ") && status.contains(" status"), "{status}");
    assert!(status.contains("events      502"), "{status}");
    assert!(status.contains("gaps        none") && status.contains("rejects     3 elements"), "{status}");
    let summary = section(&stdout, "== 4. Summary of the last 14 days ==");
    assert!(
        summary.contains("502 events") && summary.contains("Top actors") && summary.contains("Per day"),
        "{summary}"
    );
    let queries = section(&stdout, "== 5. Questions the archive answers ==");
    for command in [
        "query --type authentication_token --action create --limit 5",
        "query --type policy_check --action override --limit 5",
        "query --action destroy --since 7d --limit 5",
        "query --actor 'alice*' --limit 5",
    ] {
        assert!(queries.contains(command), "{command} in {queries}");
    }
    assert!(queries.contains("TIME (UTC)"), "the answers as tables: {queries}");
    for c in stdout.chars() {
        assert!(c == '\n' || !c.is_control(), "control character {c:?} in the demo's output");
    }
    let backtest = section(&stdout, "== 6. What the built-in alert rules would have raised");
    assert!(backtest.contains("new-event-kind"), "{backtest}");
    let integrity = section(&stdout, "== 7. Tamper evidence");
    assert!(
        integrity.contains("\n  502\n") && integrity.contains("\u{2014} demo-key "),
        "a signed checkpoint: {integrity}"
    );
    assert!(
        integrity.contains("502 events checked against 1 signed checkpoint(s): nothing was changed"),
        "{integrity}"
    );
    assert!(section(&stdout, "== Next ==").contains("tfaudit demo --keep"));

    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_keep_leaves_an_archive_to_explore() {
    let env = Env::new();
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = env.command(None, &["demo", "--events", "300", "--keep"]).env("TMPDIR", &tmp).output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let folders: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let db = folders[0].join("archive.db");
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("tfaudit --db {} query --since 24h", db.display())), "{stdout}");
    let events = env.ok(None, &["--db", db.to_str().unwrap(), "query", "--limit", "0", "--format", "jsonl"]).await;
    assert_eq!(events.lines().count(), 297 + 5, "the history but its 3 malformed elements, and 5 new events");
}
