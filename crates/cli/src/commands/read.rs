//! Reading the archive: `query`, `export`, `summary`, `status`.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use tfaudit_backend::Mode;
use tfaudit_config::parse_when_in;
use tfaudit_store::{EventFilter, Order, Pattern, Store, StoredEvent};

use crate::args::{
    Cli, ExportArgs, ExportFormat, FilterArgs, HistoryArgs, QueryArgs, QueryFormat, ReportFormat, StatusArgs,
    SummaryArgs,
};
use crate::failure::Failure;
use crate::output::{self, EventWriter};
use crate::settings;

pub fn open_for_reading(cli: &Cli) -> Result<Arc<dyn Store>, Failure> {
    let config = settings::config(cli)?;
    settings::open_archive(cli, config.as_ref(), Mode::ReadOnly)
}

/// Checks filter flags once, so that the store only ever sees valid filters.
pub fn filter(args: &FilterArgs, now: Timestamp) -> Result<EventFilter, Failure> {
    let when = |flag: &str, v: &Option<String>| -> Result<Option<Timestamp>, Failure> {
        let zone = output::zone();
        v.as_deref()
            .map(|t| parse_when_in(t, now, &zone).map_err(|e| Failure::Usage(format!("--{flag}: {e}"))))
            .transpose()
    };
    let pattern = |v: &Option<String>| v.as_ref().map(Pattern::new);
    let f = EventFilter {
        since: when("since", &args.since)?,
        until: when("until", &args.until)?,
        actor: pattern(&args.actor),
        resource_type: pattern(&args.resource_type),
        action: pattern(&args.action),
        resource_id: pattern(&args.resource_id),
        org: pattern(&args.org),
        text: args.text.clone().filter(|t| !t.is_empty()),
        before: None,
        impersonated: false,
        destroy_run: false,
    };
    if let (Some(s), Some(u)) = (f.since, f.until)
        && s >= u
    {
        return Err(Failure::Usage(format!(
            "--since ({}) must be before --until ({})",
            output::time(s),
            output::time(u)
        )));
    }
    Ok(f)
}

/// Writes events in a query format; shared by `query`, `export` and the demo.
/// `terminal`: `out` is a terminal, so every format escapes what it would obey.
/// The writer of `format`; the formats for people (and `json`'s `names` key) show
/// names from the catalogue, loaded once here.
fn event_writer<W: Write>(
    store: &dyn Store,
    format: QueryFormat,
    out: W,
    terminal: bool,
) -> Result<EventWriter<W>, Failure> {
    Ok(match format {
        QueryFormat::Table => EventWriter::table(out, store.all_names()?),
        QueryFormat::Json => EventWriter::json(out, terminal, store.all_names()?),
        QueryFormat::Jsonl => EventWriter::jsonl(out, terminal),
        QueryFormat::Csv => EventWriter::csv(out, terminal)?,
        QueryFormat::Explain => EventWriter::explain(out, store.all_names()?),
    })
}

pub fn write_events(
    store: &dyn Store,
    filter: &EventFilter,
    order: Order,
    limit: Option<u64>,
    format: QueryFormat,
    out: &mut dyn Write,
    terminal: bool,
) -> Result<u64, Failure> {
    let mut writer = event_writer(store, format, &mut *out, terminal)?;
    let n = store.events(filter, order, limit, &mut |e| writer.write(&e))?;
    writer.finish()?;
    Ok(n)
}

pub fn query(cli: &Cli, args: &QueryArgs) -> Result<(), Failure> {
    let mut filter = filter(&args.filter, Timestamp::now())?;
    let store = open_for_reading(cli)?;
    resolve_names(&*store, &mut filter)?;
    let stdout = output::Stdout::new();
    let terminal = stdout.terminal;
    let format = match args.format {
        _ if args.explain => QueryFormat::Explain,
        Some(f) => f,
        None if terminal => QueryFormat::Table,
        None => QueryFormat::Jsonl,
    };
    let mut out = BufWriter::new(stdout);
    let limit = crate::args::no_limit_if_zero(args.limit);
    match &args.around {
        Some(id) => {
            let (filter, anchor) = tfaudit_investigate::around(&*store, id, args.window.0, filter)?;
            let same_actor = |e: &StoredEvent| tfaudit_investigate::same_actor(&anchor, e);
            write_kept(&*store, &filter, Order::OldestFirst, limit, format, &mut out, terminal, &same_actor)?;
        }
        None => {
            write_events(&*store, &filter, Order::NewestFirst, limit, format, &mut out, terminal)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Writes the events `filter` finds that `keep` accepts, at most `limit` of them: for
/// matches the store's filter cannot say exactly (an exact actor, a whole id). How many
/// were written.
#[allow(clippy::too_many_arguments)]
fn write_kept(
    store: &dyn Store,
    filter: &EventFilter,
    order: Order,
    limit: Option<u64>,
    format: QueryFormat,
    out: &mut dyn Write,
    terminal: bool,
    keep: &dyn Fn(&StoredEvent) -> bool,
) -> Result<u64, Failure> {
    let mut writer = event_writer(store, format, out, terminal)?;
    let mut written = 0u64;
    store.events(filter, order, None, &mut |e| {
        if limit.is_none_or(|l| written < l) && keep(&e) {
            written += 1;
            writer.write(&e)?;
        }
        Ok(())
    })?;
    writer.finish()?;
    Ok(written)
}

/// `tfaudit history ID`: every event about the resource or mentioning it, oldest first.
pub fn history(cli: &Cli, args: &HistoryArgs) -> Result<(), Failure> {
    let id = args.id.trim();
    if id.is_empty() {
        return Err(Failure::Usage("history needs a resource id, such as ws-… or team-…".into()));
    }
    let mut filter = filter(&args.range.filter(), Timestamp::now())?;
    let store = open_for_reading(cli)?;
    let id = &resolve_id(&*store, id)?;
    // The store's text match finds every event naming the id (case-insensitively);
    // only those naming it exactly are kept.
    filter.text = Some(id.to_owned());
    let stdout = output::Stdout::new();
    let terminal = stdout.terminal;
    let format = args.format.unwrap_or(if terminal { QueryFormat::Table } else { QueryFormat::Jsonl });
    let mut out = BufWriter::new(stdout);
    let limit = crate::args::no_limit_if_zero(args.limit);
    let names = |e: &StoredEvent| tfaudit_investigate::names_id(&e.event.raw, id);
    let written = write_kept(&*store, &filter, Order::OldestFirst, limit, format, &mut out, terminal, &names)?;
    out.flush()?;
    if written == 0 && !cli.quiet {
        let shown: String = id.chars().take(80).collect();
        writeln!(io::stderr(), "no event names {:?}", output::terminal_safe(&shown))?;
    }
    Ok(())
}

/// `--actor` and `--resource` given as names: the ids the catalogue names so. A
/// resource name several ids have had is an error listing them; an actor's is matched
/// as text (ids and the events' descriptions), as any actor filter.
///
/// # Errors
/// The catalogue's, and an ambiguous resource name.
pub fn resolve_names(store: &dyn Store, filter: &mut EventFilter) -> Result<(), Failure> {
    if let Some(p) = &filter.actor
        && let Some(id) = tfaudit_investigate::resolve_actor(store, p.as_str())?
    {
        filter.actor = Some(Pattern::new(id));
    }
    if let Some(p) = &filter.resource_id
        && !p.is_glob()
    {
        filter.resource_id = Some(Pattern::new(resolve_id(store, p.as_str())?));
    }
    Ok(())
}

/// The id `text` stands for (see [`tfaudit_investigate::resolve_id`]).
///
/// # Errors
/// When several ids have (or had) that name: the message lists them, to pick one.
pub fn resolve_id(store: &dyn Store, text: &str) -> Result<String, Failure> {
    Ok(tfaudit_investigate::resolve_id(store, text)?)
}

pub fn export(cli: &Cli, args: &ExportArgs) -> Result<(), Failure> {
    let mut filter = filter(&args.filter, Timestamp::now())?;
    let store = open_for_reading(cli)?;
    resolve_names(&*store, &mut filter)?;
    if args.with_proof && matches!(args.format, ExportFormat::Csv) {
        return Err(Failure::Usage(
            "--with-proof needs --format jsonl: a proof covers each event's original bytes".into(),
        ));
    }
    let format = match args.format {
        ExportFormat::Jsonl => QueryFormat::Jsonl,
        ExportFormat::Csv => QueryFormat::Csv,
    };
    match &args.output {
        None => {
            let stdout = output::Stdout::new();
            let terminal = stdout.terminal;
            let mut out = BufWriter::with_capacity(1 << 16, stdout);
            write_events(&*store, &filter, Order::OldestFirst, None, format, &mut out, terminal)?;
            out.flush()?;
        }
        Some(path) => {
            // Written beside the target and renamed when complete: a failed export never
            // leaves a file that looks whole.
            let partial = partial_path(path);
            let file = create_private(&partial)
                .map_err(|e| Failure::Output(format!("cannot create {}: {e}", partial.display())))?;
            let mut out = BufWriter::with_capacity(1 << 16, file);
            let proof = args.with_proof.then(|| (with_suffix(path, ".proof.json"), with_suffix(path, ".checkpoint")));
            let partial_proof = proof.as_ref().map(|(p, _)| partial_path(p));
            let result = match &partial_proof {
                None => {
                    write_events(&*store, &filter, Order::OldestFirst, None, format, &mut out, false).map(|n| (n, None))
                }
                Some(proof_file) => write_with_proof(&*store, &filter, format, &mut out, proof_file)
                    .map(|(n, checkpoint)| (n, Some(checkpoint))),
            }
            .and_then(|done| out.flush().map(|()| done).map_err(Failure::from));
            let finish = |(n, checkpoint): (u64, Option<String>)| -> Result<u64, Failure> {
                let rename = |from: &Path, to: &Path| {
                    std::fs::rename(from, to)
                        .map_err(|e| Failure::Output(format!("cannot write {}: {e}", to.display())))
                };
                if let (Some((proof_file, checkpoint_file)), Some(partial_proof), Some(checkpoint)) =
                    (&proof, &partial_proof, checkpoint)
                {
                    std::fs::write(checkpoint_file, checkpoint)
                        .map_err(|e| Failure::Output(format!("cannot write {}: {e}", checkpoint_file.display())))?;
                    rename(partial_proof, proof_file)?;
                }
                rename(&partial, path)?;
                Ok(n)
            };
            match result.and_then(finish) {
                Ok(n) => {
                    if !cli.quiet {
                        let _ = writeln!(io::stderr(), "wrote {} events to {}", output::count(n), path.display());
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    if let Some(p) = &partial_proof {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// `export --with-proof`: the events written to `out` and, in the same pass over the
/// archive (so that both hold the same events, whatever is stored meanwhile), each
/// one's inclusion proof at the newest checkpoint to `proof_file`, one at a time (an
/// export of any size proven in the memory of one event). How many, and the
/// checkpoint, for the file beside them.
fn write_with_proof(
    store: &dyn Store,
    filter: &EventFilter,
    format: QueryFormat,
    out: &mut dyn Write,
    proof_file: &Path,
) -> Result<(u64, String), Failure> {
    let file = create_private(proof_file)
        .map_err(|e| Failure::Output(format!("cannot create {}: {e}", proof_file.display())))?;
    let mut proof = tfaudit_integrity::ExportProofWriter::start(store, BufWriter::with_capacity(1 << 16, file))?;
    let mut writer = event_writer(store, format, &mut *out, false)?;
    // The proof's own error (an event not checkpointed yet says what to run) is kept
    // to be returned as it is, rather than as the write failure it ends the pass with.
    let mut failed = None;
    let n = store.events(filter, Order::OldestFirst, None, &mut |e| {
        if let Err(why) = proof.add(&e) {
            let message = why.to_string();
            failed = Some(why);
            return Err(io::Error::other(message));
        }
        writer.write(&e)
    });
    if let Some(why) = failed {
        return Err(why.into());
    }
    let n = n?;
    writer.finish()?;
    let checkpoint = proof.checkpoint().to_owned();
    proof.finish()?;
    Ok((n, checkpoint))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

fn create_private(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

/// When each organization's listings were last read (`enrich_token`), for those
/// read at all.
pub fn names_listed(
    store: &dyn Store,
    sources: &[tfaudit_store::SourceStatus],
) -> Result<std::collections::BTreeMap<String, Timestamp>, tfaudit_store::StoreError> {
    let mut listed = std::collections::BTreeMap::new();
    for s in sources {
        if let Some(t) = store.listed_at(&s.name)? {
            listed.insert(s.name.clone(), t);
        }
    }
    Ok(listed)
}

/// The catalogue's names of a summary's top actors.
pub fn actor_names(
    store: &dyn Store,
    summary: &tfaudit_store::Summary,
) -> Result<std::collections::BTreeMap<String, String>, tfaudit_store::StoreError> {
    let ids: Vec<&str> =
        summary.top_actors.iter().map(|a| a.accessor_id.as_str()).filter(|id| !id.is_empty()).collect();
    Ok(store.current_names(&ids)?.into_iter().map(|(id, r)| (id, r.name)).collect())
}

pub fn summary(cli: &Cli, args: &SummaryArgs) -> Result<(), Failure> {
    let now = Timestamp::now();
    let mut filter_args = args.filter.clone();
    if filter_args.since.is_none() {
        filter_args.since = Some("30d".into());
    }
    let mut filter = filter(&filter_args, now)?;
    let store = open_for_reading(cli)?;
    resolve_names(&*store, &mut filter)?;
    let summary = store.summary(&filter, args.top)?;
    // Text shows `name (id)`; JSON adds the names under `names` beside the summary's
    // own fields.
    let names = actor_names(&*store, &summary)?;
    let mut out = output::Stdout::new();
    match args.format {
        ReportFormat::Json => {
            #[derive(serde::Serialize)]
            struct Named<'a> {
                #[serde(flatten)]
                summary: &'a tfaudit_store::Summary,
                names: &'a std::collections::BTreeMap<String, String>,
            }
            out.json(&Named { summary: &summary, names: &names })?;
        }
        ReportFormat::Text => {
            let chart = out.terminal;
            output::summary_text(&summary, &names, chart, &mut out)?;
        }
    }
    Ok(())
}

pub fn status(cli: &Cli, args: &StatusArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let location = settings::db_location(cli, config.as_ref())?;
    let store = location.open(Mode::ReadOnly)?;
    let sources = store.status()?;
    let listed = names_listed(&*store, &sources)?;
    let mut out = output::Stdout::new();
    match args.format {
        ReportFormat::Json => {
            let rejects = if args.rejects { Some(store.rejects(100)?) } else { None };
            let alerts = store.alert_status(10)?;
            let dead: std::collections::BTreeMap<String, u64> = dead_letters(&*store)?.into_iter().collect();
            let integrity = tfaudit_integrity::status(&*store)?;
            let removed = Removed::of(&*store)?;
            let value = serde_json::json!({"archive": location.to_string(), "organizations": sources, "rejects": rejects, "alerts": alerts, "dead_letters": dead, "integrity": integrity, "retention": removed, "names_listed_at": listed});
            out.json(&value)?;
        }
        ReportFormat::Text => {
            writeln!(out, "archive {}\n", output::terminal_safe(&location.to_string()))?;
            output::status_text(&sources, &listed, &mut out)?;
            alerts_text(&store.alert_status(5)?, &mut out)?;
            integrity_text(&tfaudit_integrity::status(&*store)?, &mut out)?;
            let removed = Removed::of(&*store)?;
            if removed.days > 0 {
                writeln!(
                    out,
                    "\nretention\n  removed     {} days, {} events, {} to {}, kept in cold storage ({}); `tfaudit archive pull --since DATE` brings them back",
                    output::count(removed.days),
                    output::count(removed.events),
                    removed.oldest_day.as_deref().unwrap_or(""),
                    removed.newest_day.as_deref().unwrap_or(""),
                    output::terminal_safe(removed.location.as_deref().unwrap_or(""))
                )?;
            }
            let dead = dead_letters(&*store)?;
            if !dead.is_empty() {
                writeln!(out, "\ndead letters (events a sink's target refused as invalid)")?;
                for (sink, n) in dead {
                    let sink = output::terminal_safe(&sink).into_owned();
                    writeln!(out, "  sink {sink}: {n} (send them again: tfaudit forward --retry-dead {sink})")?;
                }
            }
            if args.rejects {
                let rejects = store.rejects(100)?;
                writeln!(out, "\nrejected elements (most recent first)")?;
                if rejects.is_empty() {
                    writeln!(out, "  none")?;
                }
                for r in rejects {
                    writeln!(
                        out,
                        "  {} {}: {} (seen {}x): {}",
                        output::time(r.first_seen),
                        output::terminal_safe(&r.source),
                        output::terminal_safe(&r.reason),
                        r.times_seen,
                        output::terminal_safe(&r.raw.chars().take(300).collect::<String>())
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The days `[retention] keep_local` removed from the local archive (not pulled back).
#[derive(Debug, Default, serde::Serialize)]
struct Removed {
    days: u64,
    events: u64,
    oldest_day: Option<String>,
    newest_day: Option<String>,
    /// Where the newest removed day's copy is.
    location: Option<String>,
}

impl Removed {
    fn of(store: &dyn tfaudit_store::Store) -> Result<Self, Failure> {
        let mut removed = Self::default();
        for day in store.pruned_days()?.into_iter().filter(|d| d.restored_at.is_none()) {
            removed.days += 1;
            removed.events += day.events;
            if removed.oldest_day.as_ref().is_none_or(|o| &day.day < o) {
                removed.oldest_day = Some(day.day.clone());
            }
            if removed.newest_day.as_ref().is_none_or(|n| &day.day > n) {
                removed.newest_day = Some(day.day.clone());
                removed.location = Some(day.location.clone());
            }
        }
        Ok(removed)
    }
}

/// Each sink's dead letters, by sink name (other consumers have none).
fn dead_letters(store: &dyn tfaudit_store::Store) -> Result<Vec<(String, u64)>, Failure> {
    Ok(store
        .dead_letter_counts()?
        .into_iter()
        .filter_map(|(consumer, n)| consumer.strip_prefix("sink:").map(|sink| (sink.to_owned(), n)))
        .collect())
}

fn integrity_text(s: &tfaudit_integrity::IntegrityStatus, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "\nintegrity")?;
    match &s.latest_checkpoint {
        None => writeln!(out, "  checkpoint  none yet (made after each sync; or run `tfaudit checkpoint`)")?,
        Some(c) => writeln!(
            out,
            "  checkpoint  {} events, {}, {}",
            c.size,
            output::time(c.made_at),
            c.signed_by.as_deref().map_or_else(
                || "unsigned (set [integrity] signing_key)".to_owned(),
                |k| format!("signed by {}", output::terminal_safe(k))
            )
        )?,
    }
    match &s.last_verification {
        None => writeln!(out, "  verified    never (run `tfaudit verify --key PUBKEY`)")?,
        Some(v) => match &v.finding {
            None => writeln!(out, "  verified    {}: {} events, nothing changed", output::time(v.at), v.size)?,
            Some(f) => writeln!(out, "  verified    {}: FAILED: {}", output::time(v.at), output::terminal_safe(f))?,
        },
    }
    Ok(())
}

fn alerts_text(s: &tfaudit_store::AlertStatus, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "\nalerts")?;
    match s.cursor {
        None => writeln!(out, "  engine      not started (runs in `tfaudit watch` and `tfaudit alerts run`)")?,
        Some(c) if c >= s.newest_seq => writeln!(out, "  engine      up to date (event {c})")?,
        Some(c) => writeln!(out, "  engine      at event {c} of {}", s.newest_seq)?,
    }
    writeln!(
        out,
        "  raised      {}; deliveries {} delivered, {} pending, {} failing, {} abandoned",
        output::count(s.alerts),
        output::count(s.delivered),
        output::count(s.pending),
        output::count(s.failing),
        output::count(s.abandoned)
    )?;
    for d in &s.misconfigured {
        writeln!(
            out,
            "  MISCONFIGURED {} since {}: {}; its alerts wait until it is fixed",
            output::terminal_safe(&d.name),
            output::time(d.since),
            output::terminal_safe(&d.misconfigured)
        )?;
    }
    for a in &s.recent {
        writeln!(
            out,
            "  {:>6}  {}  {:<8}  {}  [{}]",
            a.id,
            output::time(a.raised_at),
            a.severity,
            output::terminal_safe(&a.title),
            super::alerts::delivery_summary(a)
        )?;
        use tfaudit_store::DeliveryState::{Abandoned, Failing};
        for d in a.deliveries.iter().filter(|d| matches!(d.state, Failing | Abandoned)) {
            if let Some(e) = &d.last_error {
                writeln!(out, "          {} last error: {}", d.destination, output::terminal_safe(e))?;
            }
        }
    }
    Ok(())
}
