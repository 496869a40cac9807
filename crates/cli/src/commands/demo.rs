//! `tfaudit demo`: the whole loop with no token and no network — a simulator in this
//! process, a sync into a fresh archive, then status, a summary and example queries,
//! each with the command that reproduces it. The archive lives in a temporary folder
//! that is removed at the end, unless `--keep`.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;

use jiff::Timestamp;
use tfaudit_api::{Client, ClientOptions, Token};
use tfaudit_sim::{Sim, SimConfig};
use tfaudit_store::{EventFilter, Order, Pattern, Store};
use tfaudit_sync::WalkOptions;

use crate::args::{DemoArgs, QueryFormat};
use crate::failure::Failure;
use crate::output;
use crate::progress::Bar;

fn heading(out: &mut dyn Write, text: &str) -> io::Result<()> {
    writeln!(out, "\n== {text} ==")
}

pub async fn demo(args: &DemoArgs) -> Result<(), Failure> {
    let dir = tempfile::Builder::new()
        .prefix("tfaudit-demo-")
        .tempdir()
        .map_err(|e| Failure::Output(format!("cannot create a temporary folder for the demo's archive: {e}")))?;
    let db = dir.path().join("archive.db");
    let result = run(args, &db).await;
    if args.keep {
        let _ = dir.keep();
    }
    result
}

async fn run(args: &DemoArgs, db: &std::path::Path) -> Result<(), Failure> {
    let mut out = output::Stdout::new();
    let terminal = out.terminal;
    let sim_config = SimConfig { events: args.events, malformed: 3, hostile: 0.08, ..SimConfig::default() };
    let sim = Sim::start(sim_config, "127.0.0.1:0".parse().map_err(|_| Failure::Internal("bad address".into()))?)
        .await
        .map_err(|e| Failure::Internal(format!("cannot start the simulator on 127.0.0.1: {e}")))?;
    let store: Arc<dyn Store> =
        tfaudit_backend::Location::Sqlite(db.to_owned()).open(tfaudit_backend::Mode::CreateIfMissing)?;
    writeln!(
        out,
        "tfaudit demo: a simulated HCP Terraform organization with {} audit events over 14 days,\n\
         served at {} by `tfaudit sim`, synced into a fresh archive at {}\n\
         ({}).",
        output::count(args.events),
        sim.url(),
        db.display(),
        if args.keep { "kept when the demo ends" } else { "removed when the demo ends; --keep keeps it" }
    )?;

    let token = Token::new(sim.token()).map_err(|e| Failure::Internal(e.to_string()))?;
    let mut options = ClientOptions::new(sim.url(), token);
    options.rate_limit = None;
    let client = Client::new(options)?;
    let cancel = crate::stop_on_signals();
    let name = "demo-org";

    heading(&mut out, "1. First sync: backfill the whole retention window")?;
    writeln!(out, "$ TFE_ADDRESS={} TFE_TOKEN={} tfaudit --db {} sync", sim.url(), sim.token(), db.display())?;
    let bar = Bar::new(io::stderr().is_terminal(), name);
    let report = tfaudit_sync::sync(store.clone(), &client, name, WalkOptions::default(), &bar, &cancel).await?;
    writeln!(out, "{}", super::sync::report_line(&report))?;

    heading(&mut out, "2. Five new events arrive (two in the same second, one late); sync again")?;
    let now = Timestamp::now().as_second();
    for ts in [now, now, now - 1, now - 90, now] {
        sim.add_event(ts);
    }
    let report =
        tfaudit_sync::sync(store.clone(), &client, name, WalkOptions::default(), &tfaudit_sync::NoProgress, &cancel)
            .await?;
    writeln!(out, "{}", super::sync::report_line(&report))?;
    writeln!(
        out,
        "(the sync re-reads 10 minutes before its cursor, so same-second and late events are caught;\n \
         events it already has are recognised by id and not stored twice)"
    )?;

    heading(&mut out, "3. Status")?;
    writeln!(out, "$ tfaudit --db {} status", db.display())?;
    let (sources, listed) = tfaudit_store::blocking(&store, |store| {
        let sources = store.status()?;
        let listed = super::read::names_listed(store, &sources)?;
        Ok::<_, tfaudit_store::StoreError>((sources, listed))
    })
    .await?;
    output::status_text(&sources, &listed, &mut out)?;

    heading(&mut out, "4. Summary of the last 14 days")?;
    writeln!(out, "$ tfaudit --db {} summary --since 14d --top 5", db.display())?;
    let since = tfaudit_config::parse_when("14d", Timestamp::now()).map_err(|e| Failure::Internal(e.to_string()))?;
    let filter = EventFilter { since: Some(since), ..EventFilter::default() };
    let summary = tfaudit_store::blocking(&store, move |store| store.summary(&filter, 5)).await?;
    let names = {
        let summary = summary.clone();
        tfaudit_store::blocking(&store, move |store| super::read::actor_names(store, &summary)).await?
    };
    output::summary_text(&summary, &names, true, &mut out)?;

    heading(&mut out, "5. Questions the archive answers")?;
    let examples: [(&str, &str, EventFilter); 4] = [
        (
            "Who created API tokens?",
            "query --type authentication_token --action create --limit 5",
            EventFilter {
                resource_type: Some(Pattern::new("authentication_token")),
                action: Some(Pattern::new("create")),
                ..EventFilter::default()
            },
        ),
        (
            "Which policy checks were overridden?",
            "query --type policy_check --action override --limit 5",
            EventFilter {
                resource_type: Some(Pattern::new("policy_check")),
                action: Some(Pattern::new("override")),
                ..EventFilter::default()
            },
        ),
        (
            "What was destroyed in the last 7 days?",
            "query --action destroy --since 7d --limit 5",
            EventFilter {
                action: Some(Pattern::new("destroy")),
                since: tfaudit_config::parse_when("7d", Timestamp::now()).ok(),
                ..EventFilter::default()
            },
        ),
        (
            "What did alice do? (names are untrusted: markup and escape codes print harmlessly)",
            "query --actor 'alice*' --limit 5",
            EventFilter { actor: Some(Pattern::new("alice*")), ..EventFilter::default() },
        ),
    ];
    for (question, command, filter) in examples {
        writeln!(out, "\n{question}\n$ tfaudit --db {} {command}", db.display())?;
        // Five rows: written into memory on the blocking thread that reads them.
        let rows = tfaudit_store::blocking(&store, move |store| {
            let mut rows = Vec::new();
            super::read::write_events(
                store,
                &filter,
                Order::NewestFirst,
                Some(5),
                QueryFormat::Table,
                &mut rows,
                terminal,
            )?;
            Ok::<_, Failure>(rows)
        })
        .await?;
        out.write_all(&rows)?;
    }

    heading(&mut out, "6. What the built-in alert rules would have raised (a backtest; nothing is sent)")?;
    writeln!(out, "$ tfaudit --db {} alerts test --since 14d", db.display())?;
    let rules =
        tfaudit_alerts::pack::builtin(&jiff::tz::TimeZone::UTC).map_err(|e| Failure::Internal(e.to_string()))?;
    let window = EventFilter { since: Some(since), ..EventFilter::default() };
    let presentation = tfaudit_alerts::engine::Presentation::default();
    let alerts = tfaudit_alerts::runner::backtest(store.clone(), &rules, presentation, window)
        .await
        .map_err(super::alerts::alert_failure)?;
    let mut by_rule: std::collections::BTreeMap<(std::cmp::Reverse<tfaudit_alerts::Severity>, &str), u64> =
        std::collections::BTreeMap::new();
    for a in &alerts {
        *by_rule.entry((std::cmp::Reverse(a.severity), a.rule.as_str())).or_default() += 1;
    }
    for ((severity, rule), n) in by_rule {
        writeln!(out, "  {:<8} {rule:<32} {n:>5}", severity.0.as_str())?;
    }
    if let Some(a) = alerts.iter().find(|a| a.rule == "owner-added").or_else(|| alerts.first()) {
        writeln!(out, "\nFor example:\n  {}", output::terminal_safe(&a.title))?;
        for line in a.text.lines() {
            writeln!(out, "  {}", output::terminal_safe(line))?;
        }
    }

    heading(&mut out, "7. Tamper evidence: a signed checkpoint, then verify")?;
    writeln!(out, "$ tfaudit keygen --name demo-key --out demo.key")?;
    writeln!(out, "$ TFAUDIT_SIGNING_KEY=\"$(cat demo.key)\" tfaudit --db {} checkpoint", db.display())?;
    // A key for the demo only: made here and forgotten when it ends.
    let signer = tfaudit_integrity::NoteSigner::generate("demo-key").map_err(|e| Failure::Internal(e.to_string()))?;
    let checkpointer = tfaudit_integrity::Checkpointer { signer: Some(signer.clone()), ..Default::default() };
    let made = tfaudit_store::blocking(&store, move |s| checkpointer.run(s, Timestamp::now())).await?;
    if let tfaudit_integrity::CheckpointMade::New(cp) | tfaudit_integrity::CheckpointMade::Current(cp) = made {
        for line in cp.note.split_terminator('\n') {
            writeln!(out, "  {}", output::terminal_safe(line))?;
        }
    }
    writeln!(out, "$ tfaudit --db {} verify --key demo.key.pub", db.display())?;
    let key = signer.verifier();
    let report = tfaudit_store::blocking(&store, move |s| {
        let options = tfaudit_integrity::VerifyOptions { key: Some(&key), ..Default::default() };
        tfaudit_integrity::verify(s, &options, &mut |_, _| {})
    })
    .await?;
    match &report.finding {
        None => writeln!(
            out,
            "  {} events checked against {} signed checkpoint(s): nothing was changed, deleted, inserted or reordered",
            report.events_checked, report.signatures_checked
        )?,
        Some(f) => writeln!(out, "  finding: {}", output::terminal_safe(&f.message))?,
    }
    writeln!(
        out,
        "(change one byte of one event in the archive and verify names it; `tfaudit prove EVENT_ID` gives an\n \
         auditor a proof to check with the public key alone: see the README's Tamper evidence)"
    )?;

    heading(&mut out, "Next")?;
    writeln!(
        out,
        "Run the simulator yourself (with live events and faults) and browse it in the dashboard:\n  \
           tfaudit sim --live-rate 5 --error-rate 0.1 --throttle-rate 0.1 &\n  \
           TFE_ADDRESS=http://127.0.0.1:8700 TFE_TOKEN=sim-token tfaudit --db sim.db serve --interval 10s\n  \
           # then open http://127.0.0.1:8080/ (metrics at http://127.0.0.1:9464/metrics)"
    )?;
    if args.keep {
        let db = db.display();
        writeln!(
            out,
            "Explore this archive from the command line:\n  \
               tfaudit --db {db} query --since 24h\n  \
               tfaudit --db {db} query --actor 'user-*' --format csv > events.csv\n  \
               tfaudit --db {db} export --format jsonl -o events.jsonl\n  \
               tfaudit --db {db} status --rejects"
        )?;
    } else {
        writeln!(out, "To explore this archive from the command line afterwards: tfaudit demo --keep")?;
    }
    writeln!(
        out,
        "Archive your real organization (an organization or audit trail token):\n  \
           TFE_TOKEN=... tfaudit sync      # then `tfaudit serve` (or watch) keeps it current and raises alerts\n\
         Several organizations, alert rules and destinations: `tfaudit init` writes a commented config (see the README)"
    )?;
    sim.stop().await;
    Ok(())
}
