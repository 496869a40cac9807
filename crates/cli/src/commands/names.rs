//! `tfaudit names`: what an id is called (and was called), and reading the
//! organizations' listings now.

use std::io::Write;

use serde::Serialize;
use tfaudit_store::NameRecord;

use crate::args::{Cli, NamesRefreshArgs, NamesShowArgs, ReportFormat, SyncArgs};
use crate::failure::Failure;
use crate::output::{self, terminal_safe, time};
use crate::settings;
use tfaudit_backend::Mode;

/// `names show`: synchronous, as every command that only reads (the PostgreSQL
/// client blocks, so it must not run on the async runtime's threads).
pub fn show(cli: &Cli, a: &NamesShowArgs) -> Result<(), Failure> {
    let store = super::read::open_for_reading(cli)?;
    let text = a.id.trim();
    let id = super::read::resolve_id(&*store, text)?;
    let history = store.name_history(&id)?;
    let mut out = output::Stdout::new();
    #[derive(Serialize)]
    struct Shown<'a> {
        id: &'a str,
        names: &'a [NameRecord],
    }
    match a.format {
        ReportFormat::Json => out.json(&Shown { id: &id, names: &history })?,
        ReportFormat::Text if history.is_empty() => {
            writeln!(out, "no name is known for {}", terminal_safe(&id))?;
        }
        ReportFormat::Text => {
            writeln!(out, "{}", terminal_safe(&id))?;
            for r in &history {
                let email = r.email.as_deref().map(|e| format!(" <{}>", terminal_safe(e))).unwrap_or_default();
                let gone = r.gone.map(|g| format!(", gone since {}", time(g))).unwrap_or_default();
                let from = if r.listed { "listing" } else { "events" };
                writeln!(
                    out,
                    "  {} ({}){email}: {} to {} (from {from}){gone}",
                    terminal_safe(&r.name),
                    r.kind,
                    time(r.first_seen),
                    time(r.last_seen),
                )?;
            }
        }
    }
    Ok(())
}

/// `names refresh`: reads the listings over the network, on the runtime; the
/// archive only through `blocking`.
pub async fn refresh(cli: &Cli, a: &NamesRefreshArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let sync_args = SyncArgs { org: a.org.clone(), ..SyncArgs::default() };
    let organizations = settings::organizations(&sync_args, None, config.as_ref())?;
    let store = settings::open_archive(cli, config.as_ref(), Mode::CreateIfMissing)?;
    let mut out = output::Stdout::new();
    let mut any = false;
    for org in &organizations {
        let Some(enrich) = &org.enrich else { continue };
        any = true;
        let name = org.name.clone();
        // The organization's source row is made on first use, as by sync.
        let address = org.client.address().to_owned();
        tfaudit_store::blocking(&store, move |s| s.source(&name, &address)).await?;
        let r = tfaudit_sync::refresh_names(store.clone(), &org.name, enrich, true)
            .await
            .map_err(|e| match e {
                tfaudit_sync::EnrichError::Api { error, .. } => Failure::from(error),
                tfaudit_sync::EnrichError::Store(e) => e.into(),
            })?
            .unwrap_or_default();
        if a.json {
            #[derive(Serialize)]
            struct Line<'a> {
                organization: &'a str,
                #[serde(flatten)]
                refreshed: &'a tfaudit_sync::Refreshed,
            }
            out.json(&Line { organization: &org.name, refreshed: &r })?;
        } else {
            writeln!(
                out,
                "{}: {} names listed; {} new, {} renamed, {} gone",
                terminal_safe(&org.name),
                r.listed,
                r.changes.new,
                r.changes.renamed,
                r.changes.gone
            )?;
            for why in &r.skipped {
                writeln!(out, "  skipped {}", terminal_safe(why))?;
            }
        }
    }
    if !any {
        return Err(Failure::Usage(
                    "no organization has an enrich_token; add enrich_token (an organization token) to its [[organization]] in the config".into(),
                ));
    }
    Ok(())
}
