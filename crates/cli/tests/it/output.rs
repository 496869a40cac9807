//! Query, export, summary and status output: right events, and hostile strings made
//! harmless for each place they are shown.

use tfaudit_sim::SimConfig;

use crate::harness::*;

async fn hostile_archive() -> (Env, tfaudit_sim::Sim) {
    let sim = start(SimConfig { events: 1_500, hostile: 0.5, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    (env, sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_show_no_control_characters() {
    let (env, _sim) = hostile_archive().await;
    let out = env.ok(None, &["query", "--format", "table", "--limit", "0"]).await;
    assert!(out.lines().count() > 1_000);
    for c in out.chars() {
        assert!(c == '\n' || !c.is_control(), "control character {c:?} in table output");
        assert!(!('\u{202A}'..='\u{202E}').contains(&c), "bidi override in table output");
    }
    assert!(out.contains("\\u{1b}[31m"), "escape sequences are shown, escaped");
    assert!(out.contains("<script>"), "markup is text on a terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_cells_cannot_start_a_formula() {
    let (env, _sim) = hostile_archive().await;
    let out = env.ok(None, &["export", "--format", "csv"]).await;
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "timestamp");
    let mut rows = 0;
    let mut guarded = 0;
    for row in reader.records() {
        let row = row.unwrap();
        rows += 1;
        for cell in &row {
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "formula cell {cell:?}");
            guarded += usize::from(cell.starts_with("'=") || cell.starts_with("'+") || cell.starts_with("'@"));
        }
    }
    assert_eq!(rows, 1_500);
    assert!(guarded > 0, "the hostile names were there to guard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_jsonl_give_back_the_original_events() {
    let (env, sim) = hostile_archive().await;
    let served = served(&sim);
    let array: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(None, &["query", "--format", "json", "--limit", "10"]).await).unwrap();
    assert_eq!(array.len(), 10);
    let mut named = 0;
    for v in &array {
        let original: serde_json::Value = serde_json::from_str(&served[v["id"].as_str().unwrap()]).unwrap();
        // The names of the ids it refers to come beside the event's own fields.
        let mut v = v.clone();
        named += usize::from(v.as_object_mut().unwrap().remove("names").is_some());
        assert_eq!(v, original);
    }
    assert!(named > 0, "names from the events' own descriptions are shown");
    // Not a terminal: jsonl by default, newest first.
    let lines = env.ok(None, &["query", "--limit", "3"]).await;
    let ts: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ts.len(), 3);
    assert!(ts[0] >= ts[1] && ts[1] >= ts[2]);
    // Export is oldest first.
    let export = env.ok(None, &["export"]).await;
    let first: serde_json::Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    let last: serde_json::Value = serde_json::from_str(export.lines().last().unwrap()).unwrap();
    assert!(first["timestamp"].as_str() <= last["timestamp"].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_agree_with_the_events() {
    let (env, sim) = hostile_archive().await;
    let all: Vec<serde_json::Value> = served(&sim).values().map(|j| serde_json::from_str(j).unwrap()).collect();
    let count = |args: &[&str]| {
        let env = &env;
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        async move {
            let mut full = vec!["query".to_owned(), "--format".into(), "jsonl".into(), "--limit".into(), "0".into()];
            full.extend(args);
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            env.ok(None, &refs).await.lines().count()
        }
    };
    let expected = all
        .iter()
        .filter(|e| e["resource"]["type"] == "authentication_token" && e["resource"]["action"] == "create")
        .count();
    assert!(expected > 0);
    assert_eq!(count(&["--type", "authentication_token", "--action", "create"]).await, expected);
    let expected = all.iter().filter(|e| e["resource"]["action"].as_str().unwrap().ends_with("cancel")).count();
    assert_eq!(count(&["--action", "*cancel"]).await, expected);
    let expected =
        all.iter().filter(|e| e["auth"]["accessor_id"].as_str().is_some_and(|a| a.starts_with("team-"))).count();
    assert_eq!(count(&["--actor", "team-*"]).await, expected);
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48);
    let expected =
        all.iter().filter(|e| e["timestamp"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap() >= since).count();
    let got = count(&["--since", "48h"]).await;
    assert!(got.abs_diff(expected) <= 2, "{got} vs {expected} (the clock moved between the two)");
    assert_eq!(count(&["--org", "org-SimuLat0r000001"]).await, all.len());
    assert_eq!(count(&["--org", "no-such-org"]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_and_status_report_the_archive() {
    let (env, _sim) = hostile_archive().await;
    let summary: serde_json::Value =
        serde_json::from_str(&env.ok(None, &["summary", "--since", "30d", "--top", "100", "--format", "json"]).await)
            .unwrap();
    assert_eq!(summary["total"], 1_500);
    let by_kind: u64 = summary["by_kind"].as_array().unwrap().iter().map(|k| k["count"].as_u64().unwrap()).sum();
    let per_day: u64 = summary["per_day"].as_array().unwrap().iter().map(|k| k["count"].as_u64().unwrap()).sum();
    assert_eq!((by_kind, per_day), (1_500, 1_500));
    let text = env.ok(None, &["summary"]).await;
    assert!(text.contains("1,500 events") && text.contains("Top actors"), "{text}");
    let status = env.ok(None, &["status"]).await;
    assert!(
        status.contains("1,500") && status.contains("last sync") && status.contains("gaps        none"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_to_a_file_is_whole_or_absent() {
    let (env, _sim) = hostile_archive().await;
    let file = env.path("out/events.jsonl");
    std::fs::create_dir_all(env.path("out")).unwrap();
    let out = env.run(None, &["export", "-o", file.to_str().unwrap()]).await;
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1_500);
    assert!(!env.path("out/events.jsonl.partial").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_without_an_archive_says_what_to_do() {
    let env = Env::new();
    let out = env.run(None, &["query"]).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stderr).contains("run `tfaudit sync` first"), "{}", text(&out.stderr));
    assert!(!env.db.exists(), "reading never creates an archive");
}

/// Runs `tfaudit` under a pseudo-terminal (util-linux `script`), so that the binary's
/// own terminal check sees a terminal; returns what the terminal received.
async fn on_a_terminal(env: &Env, args: &[&str]) -> String {
    let quoted: Vec<String> =
        std::iter::once(BIN).chain(args.iter().copied()).map(|a| format!("'{}'", a.replace('\'', r"'\''"))).collect();
    let out = tokio::process::Command::new("script")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("TFAUDIT_DB", &env.db)
        .env("COLUMNS", "400")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("`script` from util-linux runs commands under a pseudo-terminal");
    assert!(out.status.success(), "tfaudit {args:?} on a terminal: {}\n{}", out.status, text(&out.stderr));
    text(&out.stdout)
}

fn assert_nothing_a_terminal_obeys(what: &str, shown: &str) {
    for c in shown.chars() {
        // The pseudo-terminal turns each newline into CR LF.
        assert!(matches!(c, '\n' | '\r') || !c.is_control(), "control character {c:?} in {what} on a terminal");
        assert!(
            !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'),
            "bidi override {c:?} in {what} on a terminal"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_escapes_control_and_bidi_characters_on_a_terminal_and_only_there() {
    let (env, _sim) = hostile_archive().await;
    // (JSON itself writes an escape character as \u001b, but not a bidi override.)
    for (args, escape_shown) in [
        (&["query", "--format", "csv", "--limit", "0"][..], r"\u{1b}]0;owned\u{7}"),
        (&["export", "--format", "csv"], r"\u{1b}]0;owned\u{7}"),
        (&["query", "--format", "json", "--limit", "0"], r"\u001b]0;owned\u0007"),
        (&["query", "--format", "jsonl", "--limit", "0"], r"\u001b]0;owned\u0007"),
        (&["export", "--format", "jsonl"], r"\u001b]0;owned\u0007"),
        (&["alerts", "test", "--since", "30d", "--format", "json"], r"\u001b]0;owned\u0007"),
    ] {
        let shown = on_a_terminal(&env, args).await;
        assert!(shown.lines().count() > 100, "{args:?}: {shown}");
        assert_nothing_a_terminal_obeys(&format!("{args:?}"), &shown);
        assert!(shown.contains(escape_shown), "{args:?}: the OSC is shown, escaped");
        assert!(shown.contains(r"\u{202e}gnp.exe"), "{args:?}: the bidi override is shown, escaped");
    }
    let table = on_a_terminal(&env, &["query", "--format", "table", "--limit", "0"]).await;
    assert_nothing_a_terminal_obeys("the table", &table);
    // Piped, csv, json and jsonl are exact: the hostile strings are there as sent.
    let csv = env.ok(None, &["query", "--format", "csv", "--limit", "0"]).await;
    assert!(csv.contains("\u{1b}]0;owned\u{7}") && csv.contains("\u{202e}gnp.exe"));
    let jsonl = env.ok(None, &["query", "--format", "jsonl", "--limit", "0"]).await;
    assert!(jsonl.contains(r"\u001b]0;owned\u0007") && jsonl.contains("\u{202e}gnp.exe"));
}

/// Commands whose output is read by something that goes away before reading: each must
/// stop quietly with exit 0 (`tfaudit … | head`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_exits_zero_for_every_command() {
    let (env, sim) = hostile_archive().await;
    std::fs::write(env.path("rules.toml"), "[[rule]]\nname = \"r\"\nseverity = \"low\"\ndescription = \"d\"\n")
        .unwrap();
    let rules = env.path("rules.toml");
    let rules = rules.to_str().unwrap();
    let init = env.path("init.toml");
    let commands: Vec<Vec<&str>> = vec![
        vec!["query", "--format", "table", "--limit", "0"],
        vec!["query", "--format", "json", "--limit", "0"],
        vec!["query", "--format", "jsonl", "--limit", "0"],
        vec!["query", "--format", "csv", "--limit", "0"],
        vec!["export"],
        vec!["export", "--format", "csv"],
        vec!["summary"],
        vec!["summary", "--format", "json"],
        vec!["status"],
        vec!["status", "--format", "json", "--rejects"],
        vec!["rules", "list"],
        vec!["rules", "list", "--format", "json"],
        vec!["rules", "check", rules],
        vec!["alerts", "test", "--since", "30d"],
        vec!["alerts", "test", "--since", "30d", "--format", "json"],
        vec!["alerts", "list"],
        vec!["alerts", "list", "--format", "json"],
        vec!["alerts", "run", "--once"],
        vec!["init", "--output", init.to_str().unwrap()],
        vec!["sync"],
        vec!["watch", "--json", "--interval", "1s", "--no-alerts"],
        vec!["sim", "--listen", "127.0.0.1:0"],
        vec!["demo", "--events", "200"],
        vec!["--help"],
    ];
    for args in commands {
        let mut child = env
            .command(Some(&sim), &args)
            .env("TMPDIR", env.path(""))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command writes anything.
        drop(child.stdout.take());
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("tfaudit {args:?} did not stop when its output closed"))
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "tfaudit {args:?}: {stderr}");
        assert!(
            !stderr.contains("error") && !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "tfaudit {args:?} was not quiet: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_zero_means_no_limit_for_query() {
    let (env, _sim) = hostile_archive().await;
    let lines = |out: String| out.lines().count();
    assert_eq!(lines(env.ok(None, &["query", "--format", "jsonl", "--limit", "0"]).await), 1_500);
    assert_eq!(lines(env.ok(None, &["query", "--format", "jsonl", "--limit", "7"]).await), 7);
    assert_eq!(lines(env.ok(None, &["query", "--format", "jsonl"]).await), 100, "the default");
}

/// Completion scripts and manual pages come from the command line's own definition:
/// every command and flag is in them, for each shell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_manual_pages_cover_every_command() {
    let env = Env::new();
    for (shell, marker) in [("bash", "_tfaudit()"), ("zsh", "#compdef tfaudit"), ("fish", "complete -c tfaudit")] {
        let script = env.ok(None, &["completions", shell]).await;
        assert!(script.contains(marker), "{shell}: {}", &script[..script.len().min(300)]);
        for word in ["verify-proof", "archive", "pull", "since", "no-cold", "completions"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let out = env.run(None, &["completions", "powershell"]).await;
    assert_eq!(out.status.code(), Some(2));

    let page = env.ok(None, &["man"]).await;
    assert!(page.starts_with(".ie") || page.contains(".TH tfaudit 1"), "{}", &page[..page.len().min(300)]);
    assert!(page.contains("verify\\-proof") || page.contains("verify-proof"), "every command is listed");
    let dir = env.path("man");
    let said = env.ok(None, &["man", "--out-dir", dir.to_str().unwrap()]).await;
    let pull = std::fs::read_to_string(dir.join("tfaudit-archive-pull.1")).unwrap();
    assert!(pull.contains(".TH tfaudit\\-archive\\-pull 1") || pull.contains("tfaudit\\-archive\\-pull"), "{pull}");
    assert!(pull.contains("\\-\\-since"), "{pull}");
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert!(pages > 30, "a page per command and subcommand: {pages}");
    assert!(said.contains(&format!("wrote {pages} manual pages")), "{said}");
}

/// `--tz` and `[display] timezone`: times shown in that zone with their offset, dates
/// in `--since` read there; machine output keeps the events' own UTC times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_are_shown_and_read_in_the_chosen_zone() {
    let sim = start(SimConfig { events: 300, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    let utc = env.ok(None, &["query", "--format", "table", "--limit", "5"]).await;
    let tokyo = env.ok(None, &["--tz", "Asia/Tokyo", "query", "--format", "table", "--limit", "5"]).await;
    // The time column of each row (other columns hold random ids, which may end in Z).
    let times = |table: &str| -> Vec<String> {
        table.lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect()
    };
    assert!(!times(&utc).is_empty() && times(&utc).iter().all(|t| t.ends_with('Z')), "{utc}");
    assert!(!times(&tokyo).is_empty() && times(&tokyo).iter().all(|t| t.ends_with("+09:00")), "{tokyo}");
    // The same instants: each UTC time, nine hours on, is the Tokyo one.
    let first_time = |table: &str| {
        table.lines().nth(1).unwrap().split_whitespace().next().unwrap().parse::<jiff::Timestamp>().unwrap()
    };
    assert_eq!(first_time(&utc), first_time(&tokyo));
    let json = env.ok(None, &["query", "--format", "json", "--limit", "5"]).await;
    assert_eq!(env.ok(None, &["--tz", "Asia/Tokyo", "query", "--format", "json", "--limit", "5"]).await, json);

    // A date is midnight in the zone: Tokyo's day starts nine hours before UTC's.
    let day = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(72)).unwrap();
    let day = tfaudit_cold::layout::day_key(tfaudit_cold::days::day_of(day));
    let in_utc = lines(&env, &["query", "--since", &day, "--format", "jsonl", "--limit", "0"]).await;
    let in_tokyo =
        lines(&env, &["--tz", "Asia/Tokyo", "query", "--since", &day, "--format", "jsonl", "--limit", "0"]).await;
    let since = format!("{day}T00:00:00+09:00");
    let nine_hours = lines(&env, &["query", "--since", &since, "--format", "jsonl", "--limit", "0"]).await;
    assert_eq!(in_tokyo, nine_hours);
    assert!(in_tokyo >= in_utc);

    let config = env.path("tfaudit.toml");
    std::fs::write(&config, "[display]\ntimezone = \"Asia/Tokyo\"\n").unwrap();
    let from_config =
        env.ok(None, &["--config", config.to_str().unwrap(), "query", "--format", "table", "--limit", "5"]).await;
    assert_eq!(from_config, tokyo);
    // An empty TFAUDIT_TZ (as an environment file leaves it) is no setting: the config's zone.
    let out = env
        .command(None, &["--config", config.to_str().unwrap(), "query", "--format", "table", "--limit", "5"])
        .env("TFAUDIT_TZ", "")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), tokyo);
    for bad in ["Mars/Olympus", "+25:00"] {
        let out = env.run(None, &["--tz", bad, "status"]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = text(&out.stderr);
        assert!(err.contains("is not a time zone") && err.trim().lines().count() == 1, "{err}");
    }
}

async fn lines(env: &Env, args: &[&str]) -> usize {
    env.ok(None, args).await.lines().count()
}

/// `query --around ID`: every event of the same actor within the window, oldest first,
/// the event itself among them, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn around_an_event_finds_what_the_same_actor_did_then() {
    let sim = start(SimConfig { events: 2_000, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    let all: Vec<serde_json::Value> = env
        .ok(None, &["export", "--format", "jsonl"])
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let time = |e: &serde_json::Value| e["timestamp"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    let accessor = |e: &serde_json::Value| e["auth"]["accessor_id"].as_str().map(str::to_owned);
    // An event whose actor did several things within the hour around it.
    let window = jiff::SignedDuration::from_hours(1);
    let near = |a: &serde_json::Value| -> Vec<String> {
        all.iter()
            .filter(|e| accessor(e) == accessor(a) && (time(e) - time(a)).abs() <= window)
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let anchor = all.iter().filter(|e| accessor(e).is_some()).max_by_key(|e| near(e).len()).unwrap();
    let mut expected = near(anchor);
    assert!(expected.len() > 1, "{expected:?}");
    let id = anchor["id"].as_str().unwrap();
    let out = env.ok(None, &["query", "--around", id, "--window", "1h", "--format", "jsonl", "--limit", "0"]).await;
    let found: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let times: Vec<jiff::Timestamp> = found.iter().map(time).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let mut ids: Vec<String> = found.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
    let out = env.run(None, &["query", "--around", "no-such-event"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no event \"no-such-event\" in the archive"), "{}", text(&out.stderr));
    let out = env.run(None, &["query", "--around", id, "--actor", "x"]).await;
    assert_eq!(out.status.code(), Some(2), "--around sets the actor itself");
}

/// `tfaudit history ID`: a scripted workspace's life — created, a variable, a team
/// given access, a run applied — oldest first, and nothing that only names a longer id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_follows_one_resource_oldest_first() {
    let sim = start(SimConfig { events: 500, ..SimConfig::default() }).await;
    let now = jiff::Timestamp::now().as_second();
    let event = |n: i64, rtype: &str, action: &str, rid: &str, meta: serde_json::Value| {
        serde_json::json!({
            "id": format!("0000000{n}-story-4000-8000-000000000000"), "version": "0", "type": "Resource",
            "timestamp": jiff::Timestamp::from_second(now - 3600 + n * 60).unwrap().strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
            "auth": {"accessor_id": "user-StoryAlice0001", "description": "alice", "type": "Client", "impersonator_id": null, "organization_id": "org-x"},
            "request": {"id": null},
            "resource": {"id": rid, "type": rtype, "action": action, "meta": meta}
        })
    };
    let ws = serde_json::json!({"id": "ws-StoryNetwork001", "name": "prod-network"});
    let story = [
        event(1, "workspace", "create", "ws-StoryNetwork001", serde_json::Value::Null),
        event(2, "var", "create", "var-Story0001", serde_json::json!({"workspace": ws, "key": "AWS_REGION"})),
        event(
            3,
            "workspace",
            "add_team",
            "ws-StoryNetwork001",
            serde_json::json!({"team": {"id": "team-StoryOwners01"}, "workspace": ws}),
        ),
        event(4, "workspace", "update", "ws-StoryNetwork0010", serde_json::Value::Null),
        event(5, "run", "apply", "run-Story0001", serde_json::json!({"run": {"id": "run-Story0001"}, "workspace": ws})),
    ];
    let mut ids = Vec::new();
    for (n, e) in story.iter().enumerate() {
        ids.push(sim.add_event_json(now - 3600 + (n as i64 + 1) * 60, e));
    }
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    let out = env.ok(None, &["history", "ws-StoryNetwork001", "--format", "jsonl"]).await;
    let found: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        found,
        [ids[0].clone(), ids[1].clone(), ids[2].clone(), ids[4].clone()],
        "oldest first, not the longer id's event"
    );
    let team = env.ok(None, &["history", "team-StoryOwners01", "--format", "jsonl"]).await;
    assert_eq!(team.lines().count(), 1);
    let none = env.run(None, &["history", "ws-NoSuchThing0000"]).await;
    assert!(none.status.success() && none.stdout.is_empty());
    assert!(text(&none.stderr).contains("no event names"));
}

/// `tfaudit who ID` on a scripted story: alice creates a team token; the token adds a
/// member to owners and creates a second token; that one applies a run. Every step is
/// found and attributed, and alice's impersonation of bob is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_follows_an_accessor_through_the_tokens_it_created() {
    let sim = start(SimConfig { events: 500, ..SimConfig::default() }).await;
    let now = jiff::Timestamp::now().as_second();
    let event = |n: i64, accessor: &str, impersonator: Option<&str>, rtype: &str, action: &str, rid: &str| {
        serde_json::json!({
            "id": format!("0000000{n}-whos-4000-8000-000000000000"), "version": "0", "type": "Resource",
            "timestamp": jiff::Timestamp::from_second(now - 3600 + n * 60).unwrap().strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
            "auth": {"accessor_id": accessor, "description": if accessor.starts_with("user-") { "alice" } else { "owners" },
                     "type": if impersonator.is_some() { "Impersonated" } else { "Client" },
                     "impersonator_id": impersonator, "organization_id": "org-x"},
            "request": {"id": null},
            "resource": {"id": rid, "type": rtype, "action": action, "meta": {"token_type": "team"}}
        })
    };
    let alice = "user-StoryAlice0001";
    let story = [
        event(1, alice, None, "authentication_token", "create", "at-StoryTeamToken1"),
        event(2, "at-StoryTeamToken1", None, "team", "add_member", "team-StoryOwners01"),
        event(3, "at-StoryTeamToken1", None, "authentication_token", "create", "at-StoryToken0002"),
        event(4, "at-StoryToken0002", None, "run", "apply", "run-Story0001"),
        event(5, "user-StoryBob00001", Some(alice), "workspace", "update", "ws-Story0001"),
        event(6, alice, None, "workspace", "read", "ws-Story0001"),
    ];
    for (n, e) in story.iter().enumerate() {
        sim.add_event_json(now - 3600 + (n as i64 + 1) * 60, e);
    }
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    let who: serde_json::Value =
        serde_json::from_str(&env.ok(None, &["who", alice, "--format", "json"]).await).unwrap();
    assert_eq!(who["id"], alice);
    assert_eq!(who["events"], 2, "{who}");
    assert_eq!(who["names"], serde_json::json!(["alice"]));
    assert_eq!(who["impersonations"].as_array().unwrap().len(), 1, "{who}");
    assert_eq!(who["impersonations"][0]["as_accessor"], "user-StoryBob00001");
    let tokens = who["tokens"].as_array().unwrap();
    let chain: Vec<(&str, &str, u64)> = tokens
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["created_by"].as_str().unwrap(), t["trail"]["events"].as_u64().unwrap()))
        .collect();
    assert_eq!(chain, [("at-StoryTeamToken1", alice, 2), ("at-StoryToken0002", "at-StoryTeamToken1", 1)]);
    assert_eq!(tokens[0]["trail"]["actions"][0]["resource_type"], "authentication_token");
    assert_eq!(tokens[1]["trail"]["actions"][0]["action"], "apply");
    let text = env.ok(None, &["who", alice]).await;
    assert!(
        text.starts_with("user-StoryAlice0001 (alice)") && text.contains("token at-StoryToken0002 created"),
        "{text}"
    );
    // The same story in plain words, one line an event.
    let words = env.ok(None, &["query", "--explain", "--text", "whos-4000", "--limit", "0"]).await;
    for line in [
        "alice created a team API token at-StoryTeamToken1",
        "owners added a user to team team-StoryOwners01",
        "owners applied run run-Story0001",
        // The impersonator named from the catalogue (its events call it alice).
        "alice (user-StoryAlice0001) (as alice) updated workspace ws-Story0001",
    ] {
        assert!(words.contains(line), "{line:?} in {words}");
    }
    assert_eq!(words.lines().count(), 6, "{words}");
    let out = env.run(None, &["query", "--explain", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(2), "--explain is its own format");
    assert_eq!(who["alerts"], serde_json::json!([]), "history is not alerted on");

    // After the first sync, the second token creates a third: the built-in rule raises an
    // alert, and `who` lists it as raised by that token.
    let late = event(60, "at-StoryToken0002", None, "authentication_token", "create", "at-StoryToken0003");
    sim.add_event_json(now, &late);
    assert!(env.sync(&sim, &[]).await.status.success());
    let config = env.path("alerts.toml");
    std::fs::write(&config, "[alerts]\nenabled = true\n").unwrap();
    env.ok(None, &["--config", config.to_str().unwrap(), "alerts", "run", "--once"]).await;
    let who: serde_json::Value =
        serde_json::from_str(&env.ok(None, &["who", alice, "--format", "json"]).await).unwrap();
    let alerts = who["alerts"].as_array().unwrap();
    assert!(alerts.iter().any(|a| a["rule"] == "token-created" && a["by"] == "at-StoryToken0002"), "{who}");
    assert_eq!(who["tokens"].as_array().unwrap().len(), 3, "{who}");
}
