//! `tfaudit report`: a scripted month in the simulator with every kind of change the
//! report lists (and hostile strings in them), rendered as HTML, Markdown and JSON;
//! the Markdown kept as a snapshot; the HTML opened in headless Chromium, screenshot
//! and printed to PDF.

use std::time::Duration;

use serde_json::{Value, json};
use tfaudit_sim::SimConfig;

use crate::harness::*;

/// The report's section headings, in order.
const HEADINGS: [&str; 10] = [
    "Coverage",
    "Integrity",
    "Privileged access changes",
    "Token lifecycle",
    "SSO and organization settings changes",
    "Policy overrides",
    "Destroy runs and workspace deletions",
    "Impersonations",
    "Alerts",
    "Activity",
];

/// What a user of the organization may have typed: markup, a script that would retitle
/// the page, Markdown table and link syntax, backticks and a line break.
const HOSTILE: &str =
    "<script>document.title='pwned'</script> | `rm -rf` [click](http://evil.example) **x**\n# heading";

/// A simulator serving only the story (no generated history), for as long back as
/// the story needs.
async fn quiet_sim() -> tfaudit_sim::Sim {
    start(SimConfig { events: 0, retention: Duration::from_secs(100 * 365 * 86_400), ..SimConfig::default() }).await
}

fn at(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// An event of the story at `time`, with `meta`.
fn event(id: &str, time: &str, actor: (&str, &str), kind: (&str, &str), resource: &str, meta: Value) -> Value {
    json!({
        "id": id, "version": "0", "type": "Resource",
        "timestamp": time,
        "auth": {"accessor_id": actor.0, "description": actor.1, "type": "Client", "impersonator_id": null, "organization_id": "org-Story"},
        "request": {"id": null},
        "resource": {"id": resource, "type": kind.0, "action": kind.1, "meta": meta}
    })
}

/// One event of every kind the report lists, in November 2026, and a few it only counts.
fn story() -> Vec<Value> {
    let alice = ("user-StoryAlice0001", "alice");
    let mallory = ("user-StoryMallory01", HOSTILE);
    let ws = json!({"id": "ws-StoryNetwork001", "name": HOSTILE});
    let mut impersonated = event(
        "00000011-report-4000-8000-000000000000",
        "2026-11-05T10:11:00.000Z",
        ("user-StoryBob00001", "bob"),
        ("workspace", "update"),
        "ws-StoryNetwork001",
        json!({"workspace": ws}),
    );
    impersonated["auth"]["type"] = json!("Impersonated");
    impersonated["auth"]["impersonator_id"] = json!("user-SupportAdmin01");
    vec![
        event(
            "00000001-report-4000-8000-000000000000",
            "2026-11-05T10:01:00.000Z",
            mallory,
            ("team", "add_member"),
            "team-StoryOwners01",
            json!({"team": {"id": "team-StoryOwners01", "name": "owners"}, "user": {"id": "user-StoryMallory01", "username": HOSTILE}}),
        ),
        event(
            "00000002-report-4000-8000-000000000000",
            "2026-11-05T10:02:00.000Z",
            alice,
            ("organization_user", "create"),
            "ou-StoryNewHire01",
            json!({"user": {"id": "user-StoryNewHire1", "username": "newhire"}}),
        ),
        event(
            "00000003-report-4000-8000-000000000000",
            "2026-11-05T10:03:00.000Z",
            alice,
            ("workspace", "add_team"),
            "ws-StoryNetwork001",
            json!({"team": {"id": "team-StoryPlatform", "name": "platform|admins"}, "workspace": ws}),
        ),
        event(
            "00000004-report-4000-8000-000000000000",
            "2026-11-05T10:04:00.000Z",
            alice,
            ("authentication_token", "create"),
            "at-StoryToken0001",
            json!({"token_type": "team"}),
        ),
        event(
            "00000005-report-4000-8000-000000000000",
            "2026-11-05T10:05:00.000Z",
            alice,
            ("authentication_token", "create"),
            "at-StoryToken0002",
            Value::Null,
        ),
        event(
            "00000006-report-4000-8000-000000000000",
            "2026-11-05T10:06:00.000Z",
            alice,
            ("authentication_token", "destroy"),
            "at-StoryToken0002",
            Value::Null,
        ),
        event(
            "00000007-report-4000-8000-000000000000",
            "2026-11-05T10:07:00.000Z",
            mallory,
            ("saml_configuration", "disable"),
            "saml-Story0001",
            Value::Null,
        ),
        event(
            "00000008-report-4000-8000-000000000000",
            "2026-11-05T10:08:00.000Z",
            alice,
            ("organization", "update"),
            "org-Story",
            Value::Null,
        ),
        event(
            "00000009-report-4000-8000-000000000000",
            "2026-11-05T10:09:00.000Z",
            mallory,
            ("policy_check", "override"),
            "polchk-Story0001",
            json!({"workspace": ws}),
        ),
        event(
            "00000010-report-4000-8000-000000000000",
            "2026-11-05T10:10:00.000Z",
            alice,
            ("run", "apply"),
            "run-StoryDestroy01",
            json!({"run": {"id": "run-StoryDestroy01", "is_destroy": true}, "workspace": ws}),
        ),
        impersonated,
        event(
            "00000012-report-4000-8000-000000000000",
            "2026-11-05T10:12:00.000Z",
            alice,
            ("workspace", "destroy"),
            "ws-StoryOld000001",
            json!({"workspace": {"id": "ws-StoryOld000001", "name": "old"}}),
        ),
        event(
            "00000013-report-4000-8000-000000000000",
            "2026-11-06T09:00:00.000Z",
            alice,
            ("run", "apply"),
            "run-StoryPlain001",
            json!({"run": {"id": "run-StoryPlain001", "is_destroy": false}, "workspace": ws}),
        ),
        event(
            "00000014-report-4000-8000-000000000000",
            "2026-11-07T09:00:00.000Z",
            alice,
            ("var", "show"),
            "var-Story0001",
            json!({"workspace": ws}),
        ),
    ]
}

fn add(sim: &tfaudit_sim::Sim, events: &[Value]) -> Vec<String> {
    events.iter().map(|e| sim.add_event_json(at(e["timestamp"].as_str().unwrap()), e)).collect()
}

/// The ids of the events one section of the JSON report lists.
fn listed(report: &Value, section: &str) -> Vec<String> {
    report[section]["items"].as_array().unwrap().iter().map(|i| i["event_id"].as_str().unwrap().to_owned()).collect()
}

fn config(env: &Env) -> String {
    let path = env.path("tfaudit.toml");
    std::fs::write(&path, "[serve]\npublic_url = \"https://tfaudit.example.com/audit/\"\n\n[alerts]\nenabled = true\n")
        .unwrap();
    path.display().to_string()
}

/// Every section and every item of the story, in all three formats; hostile strings
/// escaped in HTML and Markdown; links to the dashboard's event pages; alerts raised
/// about the period's events with their delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_lists_every_kind_of_change_with_hostile_strings_escaped() {
    let sim = quiet_sim().await;
    let env = Env::new();
    let config = config(&env);
    // The first sync is history, never alerted on: one early event, then the story.
    add(
        &sim,
        &[event(
            "00000000-report-4000-8000-000000000000",
            "2026-11-01T08:00:00.000Z",
            ("user-StoryAlice0001", "alice"),
            ("run", "create"),
            "run-StoryFirst001",
            Value::Null,
        )],
    );
    assert!(env.sync(&sim, &["--retention", "36500d", "--name", "story"]).await.status.success());
    let ids = add(&sim, &story());
    assert!(env.sync(&sim, &["--retention", "36500d", "--name", "story"]).await.status.success());
    env.ok(None, &["--config", &config, "alerts", "run", "--once"]).await;

    let json_out = env.ok(None, &["--config", &config, "report", "--period", "2026-11", "--format", "json"]).await;
    let report: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(report["period"]["since"], "2026-11-01T00:00:00Z");
    assert_eq!(report["period"]["until"], "2026-12-01T00:00:00Z");
    let coverage = &report["coverage"][0];
    assert_eq!(coverage["events"], 15, "{coverage}");
    assert_eq!(coverage["gaps"], json!([]));
    assert!(
        coverage["statement"]
            .as_str()
            .unwrap()
            .starts_with("The record is complete from 2026-11-01T08:00:00Z to 2026-12-01T00:00:00Z"),
        "{coverage}"
    );
    assert_eq!(listed(&report, "privileged_access"), [ids[0].as_str(), ids[1].as_str(), ids[2].as_str()]);
    assert_eq!(report["privileged_access"]["items"][0]["note"], "owners team");
    assert_eq!(
        report["privileged_access"]["items"][0]["link"],
        "https://tfaudit.example.com/audit/events/00000001-report-4000-8000-000000000000"
    );
    assert_eq!(listed(&report, "tokens"), [ids[3].as_str(), ids[4].as_str(), ids[5].as_str()]);
    assert_eq!(report["tokens"]["alive_total"], 1);
    assert_eq!(report["tokens"]["alive"][0]["resource_id"], "at-StoryToken0001");
    assert_eq!(listed(&report, "sso_and_settings"), [ids[6].as_str(), ids[7].as_str()]);
    assert_eq!(listed(&report, "policy_overrides"), [ids[8].as_str()]);
    assert_eq!(
        listed(&report, "destruction"),
        [ids[9].as_str(), ids[11].as_str()],
        "the destroy run and the deleted workspace only"
    );
    assert_eq!(listed(&report, "impersonations"), [ids[10].as_str()]);
    assert_eq!(report["impersonations"]["items"][0]["impersonator_id"], "user-SupportAdmin01");
    let rules: Vec<&str> =
        report["alerts"]["items"].as_array().unwrap().iter().map(|a| a["rule"].as_str().unwrap()).collect();
    for rule in [
        "owner-added",
        "token-created",
        "sso-changed",
        "policy-override",
        "destroy-run",
        "workspace-destroyed",
        "impersonation",
    ] {
        assert!(rules.contains(&rule), "{rule} in {rules:?}");
    }
    assert!(report["alerts"]["deliveries"]["delivered"].as_u64().unwrap() >= 7, "{}", report["alerts"]);
    assert_eq!(report["activity"]["total"], 15);
    assert_eq!(report["activity"]["per_day"].as_array().unwrap().len(), 30, "every day of November");
    assert_eq!(report["activity"]["per_day"][4], json!(["2026-11-05", 12]));

    let md = env.ok(None, &["--config", &config, "report", "--period", "2026-11", "--format", "md"]).await;
    let html = env.ok(None, &["--config", &config, "report", "--period", "2026-11", "--format", "html"]).await;
    for heading in HEADINGS {
        assert!(md.contains(&format!("## {heading}\n")), "{heading} in the Markdown");
        assert!(html.contains(&format!("<h2>{heading}</h2>")), "{heading} in the HTML");
    }
    for id in &ids[..12] {
        assert!(md.contains(id.as_str()), "{id} in the Markdown");
        assert!(html.contains(id.as_str()), "{id} in the HTML");
    }
    assert!(
        html.contains("<a href=\"https://tfaudit.example.com/audit/events/00000001-report-4000-8000-000000000000\">")
    );
    assert!(md.contains("(<https://tfaudit.example.com/audit/events/00000001-report-4000-8000-000000000000>)"));
    // Hostile strings: no markup, no script, in the HTML; in the Markdown no raw markup,
    // no unescaped pipe or backtick, no line break inside a table row.
    assert!(!html.contains("<script") && !html.contains("<a href=\"http://evil"), "no hostile markup in the HTML");
    assert!(html.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"));
    assert!(!md.contains("<script") && md.contains("&lt;script&gt;"));
    for line in md.lines().filter(|l| l.starts_with("| ")) {
        assert!(!line.replace("\\`", "").contains('`'), "every backtick escaped: {line}");
        assert!(!line.contains("](http://evil"), "no live link: {line}");
    }
    assert!(!md.contains("\n# heading"), "a line break in a value is shown, not kept");
    // Each table row has as many cells as its header.
    let mut expected = 0;
    for line in md.lines() {
        if line.starts_with("| ") {
            let cells = line.replace("\\|", "").matches('|').count();
            if expected == 0 {
                expected = cells;
            }
            assert_eq!(cells, expected, "{line}");
        } else {
            expected = 0;
        }
    }

    // -o writes the file whole with its format from the extension.
    let file = env.path("november.html");
    env.ok(None, &["--config", &config, "report", "--period", "2026-11", "-o", file.to_str().unwrap()]).await;
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.starts_with("<!DOCTYPE html>") && written.ends_with("</html>\n"));
    assert_eq!(written.len(), html.len(), "the same report as on standard output");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // --org narrows to matching organizations: none here.
    let none = env.ok(None, &["report", "--period", "2026-11", "--org", "nobody", "--format", "json"]).await;
    let none: Value = serde_json::from_str(&none).unwrap();
    assert_eq!(none["coverage"], json!([]));
    assert_eq!(none["privileged_access"]["total"], 0);
    let md = env.ok(None, &["report", "--period", "2026-11", "--org", "nobody"]).await;
    assert_eq!(md.matches("None in this period.").count(), 10, "every section says so, tokens alive too:\n{md}");
}

/// Bad periods and flags: one line naming the fix, exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_periods_and_flags_are_one_line_errors() {
    let env = Env::new();
    for (args, says) in [
        (vec!["report"], "--period 2026-Q3"),
        (
            vec!["report", "--period", "2026-13"],
            "write a quarter as 2026-Q3, a month as 2026-11 or an ISO week as 2026-W48",
        ),
        (vec!["report", "--period", "Q3"], "write a quarter as 2026-Q3"),
        (vec!["report", "--period", "2026-11", "--since", "2026-11-01"], "give one of them"),
        (vec!["report", "--until", "2026-11-01"], "--until needs --since"),
        (vec!["report", "--since", "2026-11-02", "--until", "2026-11-01"], "must be before --until"),
        (vec!["report", "--since", "yesterday-ish"], "--since"),
        (vec!["report", "--period", "2026-11", "-o", "r.pdf"], "add --format html, md or json"),
    ] {
        let out = env.run(None, &args).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// The Markdown of a scripted month is stable: the same story gives the same document
/// (times that depend on when the test runs are replaced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_markdown_report_is_stable() {
    let sim = quiet_sim().await;
    let env = Env::new();
    let config = env.path("tfaudit.toml");
    std::fs::write(&config, "[serve]\npublic_url = \"https://tfaudit.example.com\"\n").unwrap();
    add(&sim, &story());
    assert!(env.sync(&sim, &["--retention", "36500d", "--name", "story"]).await.status.success());
    let md = env.ok(None, &["--config", config.to_str().unwrap(), "report", "--period", "2026-11"]).await;
    // Times after the period are when the test ran (the sync, the checkpoint, the report).
    let times = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").unwrap();
    let end: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
    let stable = times.replace_all(&md, |c: &regex::Captures<'_>| {
        let t: jiff::Timestamp = c[0].parse().unwrap();
        if t > end { "[now]".to_owned() } else { c[0].to_owned() }
    });
    let stable = stable.replace(&format!("tfaudit {}", env!("CARGO_PKG_VERSION")), "tfaudit [version]");
    insta::assert_snapshot!("report_2026_11_md", stable);
}

fn artifacts() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The HTML report in headless Chromium: a screenshot and a PDF are made, the page
/// has every section, and the hostile script in the events did not run (the title is
/// the report's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_and_prints_in_chromium() {
    let chromium = crate::dashboard::find_program("chromium");
    let sim = quiet_sim().await;
    let env = Env::new();
    add(&sim, &story());
    assert!(env.sync(&sim, &["--retention", "36500d", "--name", "story"]).await.status.success());
    let page = env.path("report.html");
    env.ok(None, &["report", "--period", "2026-11", "-o", page.to_str().unwrap()]).await;
    let dir = artifacts();
    let (png, pdf) = (dir.join("report.png"), dir.join("report.pdf"));
    for f in [&png, &pdf] {
        let _ = std::fs::remove_file(f);
    }
    let url = format!("file://{}", page.display());
    let profile = env.path("chromium-profile");
    let run = |extra: Vec<String>| {
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(extra);
        args.push(url.clone());
        let out = std::process::Command::new(&chromium).args(&args).output().unwrap();
        assert!(out.status.success(), "chromium {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    run(vec![format!("--screenshot={}", png.display()), "--window-size=1280,2400".to_owned()]);
    run(vec![format!("--print-to-pdf={}", pdf.display()), "--no-pdf-header-footer".to_owned()]);
    let dom = run(vec!["--dump-dom".to_owned()]);
    let png_bytes = std::fs::read(&png).unwrap();
    assert!(png_bytes.starts_with(b"\x89PNG") && png_bytes.len() > 20_000, "a screenshot of {} bytes", png_bytes.len());
    let pdf_bytes = std::fs::read(&pdf).unwrap();
    assert!(pdf_bytes.starts_with(b"%PDF") && pdf_bytes.len() > 20_000, "a PDF of {} bytes", pdf_bytes.len());
    let pages = pdf_bytes.windows(10).filter(|w| w == b"/Type /Pag" || w == b"/Type/Page").count();
    assert!(pages >= HEADINGS.len(), "a page per section at least: {pages}");
    for heading in HEADINGS {
        assert!(dom.contains(&format!("<h2>{heading}</h2>")), "{heading} in the page");
    }
    assert!(dom.contains("<title>Compliance report: 2026-11</title>"), "the script did not retitle the page");
    assert!(!dom.contains("pwned</title>") && !dom.contains("<script"), "no script element in the page");
    assert!(dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"), "shown as text");
}
