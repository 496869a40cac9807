//! `tfaudit forward` and `tfaudit sinks …`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use comfy_table::{ContentArrangement, Table, presets};
use jiff::Timestamp;
use tfaudit_backend::Mode;
use tfaudit_config::{ConfigFile, SinkSection};
use tfaudit_forward::{ForwardError, SinkState, consumer_name};
use tfaudit_store::blocking;

use crate::args::{Cli, ForwardArgs, ReportFormat, SinksCommand};
use crate::commands::sync::{ONE_SHOT_LEASE, take_one_shot_lease};
use crate::failure::Failure;
use crate::output::{Stdout, terminal_safe, time};
use crate::settings;

fn sinks_of(config: Option<&(PathBuf, ConfigFile)>) -> Result<&[SinkSection], Failure> {
    match config {
        Some((_, file)) if !file.sinks.is_empty() => Ok(&file.sinks),
        _ => Err(Failure::Usage(
            "no sink is configured: add a [[sink]] table to the config (see the README's Forwarding section)".into(),
        )),
    }
}

pub async fn forward(cli: &Cli, args: &ForwardArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let sections = sinks_of(config.as_ref())?;
    let base = config.as_ref().and_then(|(p, _)| p.parent()).unwrap_or(Path::new("."));
    let mut sinks = Vec::new();
    for section in sections {
        sinks.push(tfaudit_forward::build(section, base).map_err(Failure::Usage)?);
    }
    let cluster = settings::cluster(None, None, config.as_ref())?;
    let store = settings::open_archive(cli, config.as_ref(), Mode::MustExist)?;
    let cancel = crate::stop_on_signals();
    // One process at a time sends a sink's batches: this command holds the sink's
    // lease, as a `watch`/`serve` instance does, for as long as it forwards.
    let cluster = tfaudit_service::Cluster {
        instance: format!("forward-{}", cluster.instance),
        lease: if args.once { cluster.lease.min(ONE_SHOT_LEASE) } else { cluster.lease },
    };
    if let Some(wanted) = &args.retry_dead {
        let Some(sink) = sinks.into_iter().find(|s| &s.settings.name == wanted) else {
            return Err(Failure::Usage(format!(
                "no sink named {} in the config; `tfaudit sinks list` shows the sinks",
                terminal_safe(wanted)
            )));
        };
        return retry_dead(cli, store, cluster, sink, cancel).await;
    }
    // Each sink in its own task: a dead target never holds up another.
    let once = args.once;
    let tasks: Vec<_> = sinks
        .into_iter()
        .map(|sink| {
            let name = sink.settings.name.clone();
            let store = store.clone();
            let task =
                tokio::spawn(under_lease(store.clone(), cluster.clone(), name.clone(), cancel.clone(), move |lost| {
                    tfaudit_forward::run_sink(store, sink, once, lost)
                }));
            (name, task)
        })
        .collect();
    let mut out = Stdout::new();
    let mut failure = None;
    for (name, task) in tasks {
        let result = match task.await.map_err(|e| Failure::Internal(format!("sink {name}: {e}")))? {
            Ok(result) => result,
            Err(refused) => {
                tracing::error!("{refused}");
                failure.get_or_insert(refused);
                continue;
            }
        };
        match result {
            Ok(outcome) => {
                if args.once && !cli.quiet {
                    let skipped = if outcome.skipped > 0 {
                        format!(
                            ", {} skipped (before the sink's start, or more than the target takes)",
                            outcome.skipped
                        )
                    } else {
                        String::new()
                    };
                    let dead = if outcome.dead > 0 {
                        format!(", {} refused by the target and kept as dead letters", outcome.dead)
                    } else {
                        String::new()
                    };
                    writeln!(
                        out,
                        "sink {}: {} events delivered{skipped}{dead}",
                        terminal_safe(&name),
                        outcome.delivered
                    )?;
                }
            }
            Err(e) => {
                tracing::error!("{e}");
                let f = match e {
                    ForwardError::Store { .. } => Failure::Store(e.to_string()),
                    _ => Failure::Api(e.to_string()),
                };
                failure.get_or_insert(f);
            }
        }
    }
    match failure {
        Some(f) => Err(Failure::from_code_only_sinks(f)),
        None if args.once && cancel.is_cancelled() => Err(Failure::Interrupted),
        None => Ok(()),
    }
}

pub async fn sinks(cli: &Cli, command: &SinksCommand) -> Result<(), Failure> {
    let format = match command {
        SinksCommand::List { format } => format,
        SinksCommand::Check => return check(cli).await,
    };
    let config = settings::config(cli)?;
    let sections: Vec<(String, &'static str, bool)> = sinks_of(config.as_ref())?
        .iter()
        .map(|s| (s.name.clone(), s.kind.as_str(), s.start.as_deref() == Some("now")))
        .collect();
    let store = settings::open_archive(cli, config.as_ref(), Mode::MustExist)?;
    let now = Timestamp::now();
    let rows = blocking(&store, move |s| {
        let dead: std::collections::HashMap<String, u64> = s.dead_letter_counts()?.into_iter().collect();
        let mut rows = Vec::new();
        for (name, kind, from_now) in sections {
            let consumer = s.consumer(&consumer_name(&name))?;
            let state = consumer.as_ref().map(|c| SinkState::parse(&c.state)).unwrap_or_default();
            // A sink not run yet that starts "now" has nothing pending.
            let after = match &consumer {
                Some(c) => Some(c.position),
                None if from_now => None,
                None => Some(0),
            };
            let (lag, oldest) = match after {
                Some(after) => tfaudit_store::consumer_lag(s, after)?,
                None => (0, None),
            };
            let lag_seconds = oldest.map_or(0, |t: Timestamp| now.duration_since(t).as_secs().max(0));
            // The oldest few with the target's reasons, for the operator to fix the cause.
            let letters: Vec<serde_json::Value> = if dead.contains_key(&consumer_name(&name)) {
                s.dead_letters(&consumer_name(&name), 0, 5)?
                    .into_iter()
                    .map(|d| {
                        serde_json::json!({"seq": d.seq, "event_id": d.event_id, "reason": d.reason, "at": d.at, "attempts": d.attempts})
                    })
                    .collect()
            } else {
                Vec::new()
            };
            rows.push(serde_json::json!({
                "name": name,
                "type": kind,
                "position": consumer.as_ref().map(|c| c.position),
                "lag_events": lag,
                "lag_seconds": lag_seconds,
                "delivered": state.delivered,
                "skipped": state.skipped,
                "dead_letters": dead.get(&consumer_name(&name)).copied().unwrap_or(0),
                "first_dead_letters": letters,
                "last_error": state.last_error,
                "last_error_at": state.last_error_at,
            }));
        }
        Ok::<_, tfaudit_store::StoreError>(rows)
    })
    .await?;
    let mut out = Stdout::new();
    if *format == ReportFormat::Json {
        return out.json(&rows);
    }
    let mut t = Table::new();
    t.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(vec!["SINK", "TYPE", "POSITION", "LAG", "LAG (S)", "DELIVERED", "SKIPPED", "DEAD", "LAST ERROR"]);
    for r in &rows {
        let error = match (r["last_error"].as_str(), r["last_error_at"].as_str()) {
            (Some(e), Some(at)) => {
                format!("{} ({})", terminal_safe(e), at.parse::<Timestamp>().map_or(at.to_owned(), time))
            }
            (Some(e), None) => terminal_safe(e).into_owned(),
            _ => "-".into(),
        };
        t.add_row(vec![
            terminal_safe(r["name"].as_str().unwrap_or_default()).into_owned(),
            r["type"].as_str().unwrap_or_default().to_owned(),
            r["position"].as_i64().map_or_else(|| "not started".into(), |p| p.to_string()),
            r["lag_events"].to_string(),
            r["lag_seconds"].to_string(),
            r["delivered"].to_string(),
            r["skipped"].to_string(),
            r["dead_letters"].to_string(),
            error,
        ]);
    }
    writeln!(out, "{t}")?;
    for r in &rows {
        if let Some(first) = r["first_dead_letters"].as_array().and_then(|l| l.first()) {
            writeln!(
                out,
                "sink {}: {} dead letters, the oldest event {}: {} (send them again: tfaudit forward --retry-dead {})",
                terminal_safe(r["name"].as_str().unwrap_or_default()),
                r["dead_letters"],
                terminal_safe(first["event_id"].as_str().unwrap_or_default()),
                terminal_safe(first["reason"].as_str().unwrap_or_default()),
                terminal_safe(r["name"].as_str().unwrap_or_default()),
            )?;
        }
    }
    Ok(())
}

/// Runs `work` on `sink` while holding its lease (`sink:<name>`, as `watch`/`serve`
/// do), renewed beside it and released at the end; refused (exit 5) while a live
/// `watch`/`serve` instance forwards to it. A lost lease cancels `work` at once; the
/// sink's cursor's compare-and-set refuses whatever it still tries to commit.
async fn under_lease<T, F, Fut>(
    store: Arc<dyn tfaudit_store::Store>,
    cluster: tfaudit_service::Cluster,
    name: String,
    cancel: tokio_util::sync::CancellationToken,
    work: F,
) -> Result<T, Failure>
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let lease = take_one_shot_lease(&store, &cluster, &consumer_name(&name), &cancel, |holder, since, expires| {
        format!(
            "sink {} is being forwarded by instance {holder} (since {since}); stop it first, or let it forward (if that instance has stopped, its lease ends at {expires})",
            terminal_safe(&name)
        )
    })
    .await?;
    let lost = cancel.child_token();
    let stop = tokio_util::sync::CancellationToken::new();
    let renewer = tfaudit_service::cluster::keep_renewed(store.clone(), lease, cluster, lost.clone(), stop.clone());
    let result = work(lost).await;
    stop.cancel();
    match renewer.await.ok().flatten() {
        Some(lease) => {
            let _ = blocking(&store, move |s| s.release_lease(&lease)).await;
        }
        None if !cancel.is_cancelled() => {
            return Err(Failure::Store(format!(
                "sink {} was taken over by another instance while this one forwarded to it",
                terminal_safe(&name)
            )));
        }
        None => {}
    }
    Ok(result)
}

/// `tfaudit forward --retry-dead SINK`.
async fn retry_dead(
    cli: &Cli,
    store: Arc<dyn tfaudit_store::Store>,
    cluster: tfaudit_service::Cluster,
    sink: tfaudit_forward::Configured,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(), Failure> {
    let name = sink.settings.name.clone();
    let result = under_lease(store.clone(), cluster, name.clone(), cancel.clone(), |lost| {
        tfaudit_forward::retry_dead(store, sink, lost)
    })
    .await?;
    let outcome = result.map_err(|e| match e {
        ForwardError::Store { .. } => Failure::Store(e.to_string()),
        _ => Failure::Api(e.to_string()),
    })?;
    if !cli.quiet {
        let mut out = Stdout::new();
        let skipped = if outcome.skipped > 0 {
            format!(", {} skipped (the target cannot take them)", outcome.skipped)
        } else {
            String::new()
        };
        writeln!(
            out,
            "sink {}: {} dead letters delivered, {} refused again{skipped}",
            terminal_safe(&name),
            outcome.delivered,
            outcome.still_dead
        )?;
    }
    if cancel.is_cancelled() {
        return Err(Failure::Interrupted);
    }
    if outcome.still_dead > 0 {
        return Err(Failure::Api(format!(
            "sink {}: the target refused {} dead letters again; `tfaudit sinks list` shows its reasons",
            terminal_safe(&name),
            outcome.still_dead
        )));
    }
    Ok(())
}

/// `tfaudit sinks check`: every sink's health check, at once (a target that hangs
/// until its timeout holds up no other), a line each in the config's order.
async fn check(cli: &Cli) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let sections = sinks_of(config.as_ref())?;
    let base = config.as_ref().and_then(|(p, _)| p.parent()).unwrap_or(Path::new("."));
    let mut checks = Vec::new();
    for section in sections {
        let sink = tfaudit_forward::build(section, base).map_err(Failure::Usage)?;
        let label = format!("{} ({})", section.name, section.kind.as_str());
        checks.push((label, tokio::spawn(async move { sink.sink.health().await })));
    }
    let mut out = Stdout::new();
    let mut failed = Vec::new();
    for (label, check) in checks {
        let result = check.await.map_err(|e| Failure::Internal(format!("sink {label}: {e}")))?;
        let line = match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                failed.push(label.clone());
                format!("FAILED: {}", tfaudit_api::redact::redact(e))
            }
        };
        writeln!(out, "{}: {}", terminal_safe(&label), terminal_safe(&line))?;
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Api(format!("the health check failed for {}", terminal_safe(&failed.join(", ")))))
    }
}
