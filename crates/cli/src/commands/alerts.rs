//! `tfaudit rules …` and `tfaudit alerts …`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use jiff::Timestamp;
use tfaudit_alerts::rules::{Origin, RuleSet};
use tfaudit_alerts::runner::{self, Runner};
use tfaudit_backend::Mode;
use tfaudit_store::{AlertFilter, AlertRecord, DeliveryState, Store};

use crate::args::{AlertsCommand, Cli, DeliveryStateArg, ReportFormat, RulesCommand};
use crate::failure::Failure;
use crate::output::{Stdout, terminal_safe, time};
use crate::settings;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(header.to_vec());
    t
}

pub fn rules(cli: &Cli, command: &RulesCommand) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let mut out = Stdout::new();
    match command {
        RulesCommand::Check { file } => {
            let timezone = config
                .as_ref()
                .and_then(|(_, f)| f.alerts.timezone.as_deref())
                .and_then(|tz| jiff::tz::TimeZone::get(tz).ok())
                .unwrap_or(jiff::tz::TimeZone::UTC);
            let set = RuleSet::load(file, &timezone).map_err(|e| Failure::Usage(e.to_string()))?;
            writeln!(out, "{}: {} rules, all valid", terminal_safe(&file.display().to_string()), set.rules.len())?;
            Ok(())
        }
        RulesCommand::List { rules, format } => {
            let s = settings::alerts(config.as_ref(), rules.as_deref())?;
            if *format == ReportFormat::Json {
                let list: Vec<serde_json::Value> = s
                    .rules
                    .rules
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "name": r.name, "severity": r.severity, "enabled": r.enabled, "description": r.description,
                            "origin": match &r.origin { Origin::Builtin => "built-in".to_owned(), Origin::File(f) => f.clone() },
                            "destinations": r.destinations.clone().unwrap_or_else(|| s.default_destinations.clone()),
                        })
                    })
                    .collect();
                return out.json(&list);
            }
            let mut t = table(&["NAME", "SEVERITY", "ON", "FROM", "DESTINATIONS", "DESCRIPTION"]);
            for r in &s.rules.rules {
                t.add_row(vec![
                    r.name.clone(),
                    r.severity.to_string(),
                    if r.enabled { "yes".into() } else { "off".into() },
                    match &r.origin {
                        Origin::Builtin => "built-in".into(),
                        Origin::File(f) => terminal_safe(f).into_owned(),
                    },
                    r.destinations.clone().unwrap_or_else(|| s.default_destinations.clone()).join(", "),
                    terminal_safe(&r.description).into_owned(),
                ]);
            }
            writeln!(out, "{t}")?;
            Ok(())
        }
    }
}

fn open_store(
    cli: &Cli,
    config: Option<&(std::path::PathBuf, tfaudit_config::ConfigFile)>,
    create: bool,
) -> Result<Arc<dyn Store>, Failure> {
    let mode = if create { Mode::CreateIfMissing } else { Mode::MustExist };
    settings::open_archive(cli, config, mode)
}

/// "slack: delivered, pagerduty: failing (3 attempts)".
pub fn delivery_summary(a: &AlertRecord) -> String {
    if a.deliveries.is_empty() {
        return "no destination".into();
    }
    a.deliveries
        .iter()
        .map(|d| match d.state {
            DeliveryState::Failing => format!("{}: failing ({} attempts)", d.destination, d.attempts),
            other => format!("{}: {}", d.destination, other.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn alerts(cli: &Cli, command: &AlertsCommand) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let mut out = Stdout::new();
    match command {
        AlertsCommand::Run { once, rules } => {
            let s = Arc::new(settings::alerts(config.as_ref(), rules.as_deref())?);
            let store = open_store(cli, config.as_ref(), false)?;
            let cancel = crate::stop_on_signals();
            let mut runner = Runner::new(store, s).map_err(alert_failure)?;
            if *once {
                let evaluated = runner.evaluate().await.map_err(alert_failure)?;
                let delivered = runner.deliver(&cancel).await.map_err(alert_failure)?;
                if !cli.quiet {
                    writeln!(
                        out,
                        "{} events evaluated, {} alerts raised; {} delivered, {} failed (will retry), {} abandoned",
                        evaluated.events, evaluated.alerts, delivered.delivered, delivered.failed, delivered.abandoned
                    )?;
                }
                return Ok(());
            }
            tracing::info!("evaluating new events and delivering alerts until stopped");
            tfaudit_service::run_alerts(
                runner,
                cancel,
                Arc::new(tokio::sync::Notify::new()),
                Duration::from_secs(1),
                None,
            )
            .await;
            Ok(())
        }
        AlertsCommand::Test { filter, rules, format } => {
            let s = settings::alerts(config.as_ref(), rules.as_deref())?;
            let mut filter_args = filter.clone();
            if filter_args.since.is_none() {
                filter_args.since = Some("30d".into());
            }
            let f = super::read::filter(&filter_args, Timestamp::now())?;
            let store = open_store(cli, config.as_ref(), false)?;
            let alerts = runner::backtest(store, &s.rules, s.presentation.clone(), f).await.map_err(alert_failure)?;
            if *format == ReportFormat::Json {
                return out.json(&alerts);
            }
            if alerts.is_empty() {
                writeln!(out, "no alerts would have been raised")?;
                return Ok(());
            }
            let mut t = table(&["EVENT TIME (UTC)", "SEVERITY", "RULE", "GROUP", "TITLE"]);
            for a in &alerts {
                t.add_row(vec![
                    time(a.event_time),
                    a.severity.to_string(),
                    a.rule.clone(),
                    terminal_safe(a.group.as_deref().unwrap_or("")).into_owned(),
                    terminal_safe(&a.title).into_owned(),
                ]);
            }
            writeln!(out, "{t}")?;
            let mut by_rule: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
            for a in &alerts {
                *by_rule.entry(a.rule.as_str()).or_default() += 1;
            }
            writeln!(out, "\n{} alerts would have been raised:", alerts.len())?;
            for (rule, n) in by_rule {
                writeln!(out, "  {rule:<32} {n:>6}")?;
            }
            Ok(())
        }
        AlertsCommand::List { limit, state, rule, since, format } => {
            let store = open_store(cli, config.as_ref(), false)?;
            let since = since
                .as_deref()
                .map(|t| {
                    tfaudit_config::parse_when(t, Timestamp::now()).map_err(|e| Failure::Usage(format!("--since: {e}")))
                })
                .transpose()?;
            let filter = AlertFilter {
                since,
                rule: rule.clone(),
                state: state.map(|s| match s {
                    DeliveryStateArg::Pending => DeliveryState::Pending,
                    DeliveryStateArg::Delivered => DeliveryState::Delivered,
                    DeliveryStateArg::Failing => DeliveryState::Failing,
                    DeliveryStateArg::Abandoned => DeliveryState::Abandoned,
                }),
            };
            let limit = crate::args::no_limit_if_zero(*limit).unwrap_or(u64::MAX);
            let list = tfaudit_store::blocking(&store, move |store| store.alerts(&filter, limit)).await?;
            if *format == ReportFormat::Json {
                return out.json(&list);
            }
            if list.is_empty() {
                writeln!(out, "no alerts")?;
                return Ok(());
            }
            let mut t = table(&["ID", "RAISED (UTC)", "SEVERITY", "RULE", "TITLE", "DELIVERY"]);
            for a in &list {
                t.add_row(vec![
                    a.id.to_string(),
                    time(a.raised_at),
                    a.severity.clone(),
                    a.rule.clone(),
                    terminal_safe(&a.title).into_owned(),
                    delivery_summary(a),
                ]);
            }
            writeln!(out, "{t}")?;
            Ok(())
        }
        AlertsCommand::Show { id, format } => {
            let store = open_store(cli, config.as_ref(), false)?;
            let id = *id;
            let a = tfaudit_store::blocking(&store, move |store| store.alert(id))
                .await?
                .ok_or_else(|| Failure::Usage(format!("there is no alert {id}; `tfaudit alerts list` lists them")))?;
            if *format == ReportFormat::Json {
                return out.json(&a);
            }
            writeln!(out, "alert {}  {}  rule {}  severity {}", a.id, time(a.raised_at), a.rule, a.severity)?;
            writeln!(out, "{}\n", terminal_safe(&a.title))?;
            for line in a.text.lines() {
                writeln!(out, "  {}", terminal_safe(line))?;
            }
            writeln!(out, "\ndeliveries")?;
            for d in &a.deliveries {
                let mut line = format!("  {:<16} {:<10} {} attempts", d.destination, d.state.as_str(), d.attempts);
                if let Some(t) = d.delivered_at {
                    line.push_str(&format!(", delivered {}", time(t)));
                }
                if let Some(t) = d.next_attempt {
                    line.push_str(&format!(", next attempt {}", time(t)));
                }
                if let Some(e) = &d.last_error {
                    line.push_str(&format!("; last error: {}", terminal_safe(e)));
                }
                writeln!(out, "{line}")?;
            }
            writeln!(out, "\nevent")?;
            // Bounded, and shown even when too deep for a JSON parser.
            for line in tfaudit_api::event::pretty_json(&a.event).lines() {
                writeln!(out, "  {}", terminal_safe(line))?;
            }
            Ok(())
        }
    }
}

pub fn alert_failure(e: tfaudit_alerts::runner::AlertError) -> Failure {
    match e {
        tfaudit_alerts::runner::AlertError::Store(s) => s.into(),
        tfaudit_alerts::runner::AlertError::Internal(i) => Failure::Internal(i),
        e @ tfaudit_alerts::runner::AlertError::Setup(_) => Failure::Internal(e.to_string()),
    }
}
