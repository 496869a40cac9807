//! The dashboard: server-rendered pages, no script and nothing from a CDN, so it
//! works offline and under a Content-Security-Policy that forbids script entirely.
//! Every value is HTML-escaped by the template engine (auto-escaping for `.html`).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use jiff::tz::TimeZone;
use tfaudit_investigate::InvestigateError;
use tfaudit_store::{AlertFilter, EventFilter, Order, Pattern, Store, StoredEvent, Summary};

use crate::AppState;
use crate::api::{AlertParams, blocking, page};
use crate::filter::{Origin, Params, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/events/{id}", get(event))
        .route("/events/{id}/around", get(around))
        .route("/actors/{id}", get(actor))
        .route("/resources/{id}", get(resource))
        .route("/alerts", get(alerts))
        .route("/status", get(status))
        .route("/static/app.css", get(css))
}

const CSS: &str = include_str!("../static/app.css");

pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    // Auto-escaping follows the template's extension: every page is `.html`.
    for (name, source) in [
        ("base.html", include_str!("../templates/base.html")),
        ("events.html", include_str!("../templates/events.html")),
        ("event.html", include_str!("../templates/event.html")),
        ("alerts.html", include_str!("../templates/alerts.html")),
        ("status.html", include_str!("../templates/status.html")),
        ("actor.html", include_str!("../templates/actor.html")),
        ("resource.html", include_str!("../templates/resource.html")),
        ("around.html", include_str!("../templates/around.html")),
        ("rows.html", include_str!("../templates/rows.html")),
        ("names.html", include_str!("../templates/names.html")),
        ("range.html", include_str!("../templates/range.html")),
    ] {
        env.add_template(name, source).expect("the dashboard's templates compile (a test renders each)");
    }
    env
}

fn render(state: &AppState, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    let page = state.templates.get_template(name).and_then(|t| {
        t.render(context! { version => env!("CARGO_PKG_VERSION"), zone => zone_label(&state.zone), ..ctx })
    });
    match page {
        Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, template = name, "a dashboard page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

/// The zone's name as the footer says it.
fn zone_label(zone: &TimeZone) -> String {
    zone.iana_name().map_or_else(|| "the local zone".to_owned(), str::to_owned)
}

/// A time as people read it, in the display zone (`[display] timezone`), with the
/// zone's offset unless the zone is UTC (the footer names the zone).
fn time_in(zone: &TimeZone, t: Timestamp) -> String {
    if zone.iana_name() == Some("UTC") {
        t.strftime("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.to_zoned_datetime(zone.clone()).strftime("%Y-%m-%d %H:%M:%S %:z").to_string()
    }
}

fn time_opt_in(zone: &TimeZone, t: Option<Timestamp>) -> String {
    t.map_or_else(|| "—".to_owned(), |t| time_in(zone, t))
}

/// An event as a table row shows it. Ids are shown as `name (id)` where a name is
/// known, and linked to their actor and resource pages.
#[derive(Serialize)]
struct Row {
    /// As stored: only ever put into a URL, where `urlencode` escapes it.
    link_id: String,
    id: String,
    time: String,
    actor: String,
    /// The accessor id as stored, for the actor page's URL.
    actor_link: Option<String>,
    impersonator: Option<String>,
    impersonator_link: Option<String>,
    #[serde(rename = "type")]
    resource_type: String,
    action: String,
    resource: String,
    resource_id: String,
    resource_link: Option<String>,
    organization: String,
    explain: String,
}

/// An event string made safe to show: HTML escaping is the template's job; this
/// makes invisible and reordering characters visible.
fn shown(s: &str) -> String {
    tfaudit_api::event::escape_invisible(s, false).into_owned()
}

fn shown_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(shown)
}

/// The catalogue's current names of the ids a page shows, read once per page.
#[derive(Default)]
struct Names(HashMap<String, String>);

impl Names {
    /// The names of `ids` the catalogue knows.
    fn of(store: &dyn Store, ids: &[String]) -> Result<Self, tfaudit_store::StoreError> {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        if ids.is_empty() {
            return Ok(Self::default());
        }
        Ok(Self(store.current_names(&ids)?.into_iter().map(|(id, r)| (id, r.name)).collect()))
    }

    fn name(&self, id: &str) -> Option<&str> {
        self.0.get(id).map(String::as_str)
    }

    /// `name (id)`, escaped for showing.
    fn show(&self, id: &str) -> String {
        shown(&tfaudit_model::name_and_id(self.name(id), id))
    }
}

fn row(e: &StoredEvent, names: &Names, zone: &TimeZone) -> Row {
    let ev = &e.event;
    // The event's own description is what the actor was called then; the
    // catalogue's name serves when the event has none.
    let actor = match ev.accessor_id.as_deref() {
        Some(id) => shown(&tfaudit_model::name_and_id(ev.auth_description.as_deref().or(names.name(id)), id)),
        None => shown(ev.auth_description.as_deref().unwrap_or("(system)")),
    };
    let resource_id = ev.resource_id.as_deref().unwrap_or_default();
    Row {
        link_id: ev.id.clone(),
        id: shown(&ev.id),
        time: time_in(zone, ev.timestamp),
        actor,
        actor_link: ev.accessor_id.clone().filter(|id| !id.is_empty()),
        impersonator: ev.impersonator_id.as_deref().map(|id| names.show(id)),
        impersonator_link: ev.impersonator_id.clone(),
        resource_type: shown(ev.resource_type.as_deref().unwrap_or_default()),
        action: shown(ev.resource_action.as_deref().unwrap_or_default()),
        resource: names.show(resource_id),
        resource_id: shown(resource_id),
        resource_link: ev.resource_id.clone().filter(|id| !id.is_empty()),
        organization: shown(&e.source),
        explain: shown(&tfaudit_model::explain_with(ev, &|id| names.name(id).map(str::to_owned))),
    }
}

/// The accessor, impersonator and resource ids of `events`, and `more`: the ids a
/// page names.
fn ids_of<'a>(events: impl IntoIterator<Item = &'a StoredEvent>, more: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .into_iter()
        .flat_map(|e| [&e.event.accessor_id, &e.event.impersonator_id, &e.event.resource_id])
        .flatten()
        .map(String::as_str)
        .chain(more.iter().copied())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Reads the names of `ids`, on a blocking thread like every archive call.
async fn names_of(state: &AppState, ids: Vec<String>) -> Result<Names, Response> {
    blocking(&state.store, move |store| Names::of(store, &ids)).await
}

#[derive(Serialize)]
struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    label: String,
    count: u64,
}

#[derive(Serialize)]
struct Chart {
    width: u32,
    height: u32,
    bucket: &'static str,
    bars: Vec<Bar>,
    first: String,
    last: String,
}

/// Bars per hour (ranges up to three days) or per day, empty buckets included.
fn chart(summary: &Summary, since: Timestamp, until: Timestamp) -> Chart {
    let (width, height) = (1000u32, 100u32);
    let hourly = until.duration_since(since).as_hours() <= 72;
    let step: i64 = if hourly { 3600 } else { 86_400 };
    let counts: BTreeMap<i64, u64> = if hourly {
        summary
            .per_hour
            .iter()
            .filter_map(|h| {
                format!("{}:00Z", h.day.trim_end_matches('Z'))
                    .parse::<Timestamp>()
                    .ok()
                    .map(|t| (t.as_second(), h.count))
            })
            .collect()
    } else {
        summary
            .per_day
            .iter()
            .filter_map(|d| format!("{}T00:00:00Z", d.day).parse::<Timestamp>().ok().map(|t| (t.as_second(), d.count)))
            .collect()
    };
    let first = since.as_second().div_euclid(step) * step;
    let last = until.as_second().div_euclid(step) * step;
    let buckets: Vec<i64> = (0..=((last - first) / step).min(2000)).map(|i| first + i * step).collect();
    let max = buckets.iter().filter_map(|b| counts.get(b)).copied().max().unwrap_or(0).max(1);
    let slot = f64::from(width) / buckets.len().max(1) as f64;
    let label = |t: i64| {
        let ts = Timestamp::from_second(t).unwrap_or_default();
        if hourly { ts.strftime("%Y-%m-%d %H:00").to_string() } else { ts.strftime("%Y-%m-%d").to_string() }
    };
    let bars = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let count = counts.get(b).copied().unwrap_or(0);
            let h = (count as f64 / max as f64) * f64::from(height);
            Bar { x: i as f64 * slot, y: f64::from(height) - h, w: (slot - 1.0).max(0.5), h, label: label(*b), count }
        })
        .collect();
    Chart {
        width,
        height,
        bucket: if hourly { "hour" } else { "day" },
        bars,
        first: buckets.first().map(|b| label(*b)).unwrap_or_default(),
        last: buckets.last().map(|b| label(*b)).unwrap_or_default(),
    }
}

/// The query string of `params` with `cursor` set (or removed).
fn url_with_cursor(params: &Params, cursor: Option<&str>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let pairs = [
        ("since", &params.since),
        ("until", &params.until),
        ("actor", &params.actor),
        ("type", &params.resource_type),
        ("action", &params.action),
        ("resource_id", &params.resource_id),
        ("org", &params.org),
        ("text", &params.text),
    ];
    for (k, v) in pairs {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            q.append_pair(k, v);
        }
    }
    if let Some(c) = cursor {
        q.append_pair("cursor", c);
    }
    format!("/?{}", q.finish())
}

const SINCE_OPTIONS: [&str; 6] = ["1h", "24h", "7d", "30d", "90d", "365d"];

async fn index(State(state): State<AppState>, QueryParams(mut params): QueryParams<Params>) -> Response {
    if params.since.as_deref().is_none_or(str::is_empty) {
        params.since = Some("7d".into());
    }
    let mut options: Vec<String> = SINCE_OPTIONS.iter().map(|s| (*s).to_owned()).collect();
    if let Some(s) = &params.since
        && !options.contains(s)
    {
        options.push(s.clone());
    }
    let parsed = match params.parse(Origin::Form, None, 50) {
        Ok(q) => resolve_names(&state, q).await,
        Err(message) => Ok(Err(message)),
    };
    let query = match parsed {
        Err(r) => return r,
        Ok(Ok(q)) => q,
        Ok(Err(message)) => {
            let ctx = context! { page => "events", error => message, params => params_view(&params), since_options => options,
            events => Vec::<Row>::new(), total => 0, chart => chart(&Summary::default(), Timestamp::now(), Timestamp::now()) };
            return render(&state, StatusCode::BAD_REQUEST, "events.html", ctx);
        }
    };
    let (events, next) = match page(&state, &query).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let summary_filter = EventFilter { before: None, ..query.filter.clone() };
    let summary = match blocking(&state.store, move |store| store.summary(&summary_filter, 8)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let top: Vec<&str> = summary.top_actors.iter().map(|a| a.accessor_id.as_str()).collect();
    let names = match names_of(&state, ids_of(&events, &top)).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let now = Timestamp::now();
    let since = query.filter.since.unwrap_or(now);
    let until = query.filter.until.unwrap_or(now);
    let range_label = match query.filter.until {
        Some(u) => format!("from {} to {}", time_in(&state.zone, since), time_in(&state.zone, u)),
        None => format!("in the last {}", params.since.clone().unwrap_or_default()),
    };
    let ctx = context! {
        page => "events",
        params => params_view(&params),
        since_options => options,
        total => summary.total,
        range_label => range_label,
        chart => chart(&summary, since, until),
        top_actors => summary.top_actors.iter().map(|a| context! {
            accessor_id => shown(&a.accessor_id), accessor_link => a.accessor_id, count => a.count,
            description => a.description.as_deref().or(names.name(&a.accessor_id)).map(shown),
        }).collect::<Vec<_>>(),
        by_kind => summary.by_kind.iter().map(|k| context! {
            resource_type => shown(&k.resource_type), action => shown(&k.action), count => k.count,
            type_link => k.resource_type, action_link => k.action,
        }).collect::<Vec<_>>(),
        events => events.iter().map(|e| row(e, &names, &state.zone)).collect::<Vec<_>>(),
        next_url => next.as_deref().map(|c| url_with_cursor(&params, Some(c))),
        newest_url => url_with_cursor(&params, None),
    };
    render(&state, StatusCode::OK, "events.html", ctx)
}

fn params_view(p: &Params) -> minijinja::Value {
    context! { since => p.since, actor => p.actor, type => p.resource_type, action => p.action, resource => p.resource_id, org => p.org, text => p.text, cursor => p.cursor }
}

/// The form's actor and resource written as names: the ids the catalogue names so.
/// A resource name several ids have had is an error listing them; an actor's is
/// matched as text (ids and descriptions).
async fn resolve_names(state: &AppState, mut query: Query) -> Result<Result<Query, String>, Response> {
    let actor = query.filter.actor.as_ref().map(|p| p.as_str().to_owned());
    let resource = query.filter.resource_id.as_ref().filter(|p| !p.is_glob()).map(|p| p.as_str().to_owned());
    if actor.is_none() && resource.is_none() {
        return Ok(Ok(query));
    }
    let resolved = investigating(state, move |store| {
        let actor = actor.map(|a| tfaudit_investigate::resolve_actor(store, &a)).transpose()?.flatten();
        let resource = resource.map(|r| tfaudit_investigate::resolve_id(store, &r)).transpose()?;
        Ok((actor, resource))
    })
    .await?;
    Ok(resolved.map_err(|e| shown(&e.to_string())).map(|(actor, resource)| {
        if let Some(id) = actor {
            query.filter.actor = Some(Pattern::new(id));
        }
        if let Some(id) = resource {
            query.filter.resource_id = Some(Pattern::new(id));
        }
        query
    }))
}

/// Runs an investigation on a blocking thread: the archive failing is the page's
/// 503; what the investigation finds wrong (a name of several ids, no such event) is
/// the caller's to show.
async fn investigating<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store) -> Result<T, InvestigateError> + Send + 'static,
) -> Result<Result<T, InvestigateError>, Response> {
    blocking(&state.store, move |store| match f(store) {
        Ok(t) => Ok(Ok(t)),
        Err(InvestigateError::Store(e)) => Err(e),
        Err(e) => Ok(Err(e)),
    })
    .await
}

async fn event(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let lookup = id.clone();
    let found = match blocking(&state.store, move |store| store.event(&lookup)).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(e) = found else {
        let ctx = context! { page => "events", error => format!("There is no event {} in the archive.", shown(&id)), e => context!{} };
        return render(&state, StatusCode::NOT_FOUND, "event.html", ctx);
    };
    let names = match names_of(&state, ids_of([&e], &[])).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let ev = &e.event;
    let pretty = tfaudit_api::event::escape_invisible(&tfaudit_api::event::pretty_json(&ev.raw), true).into_owned();
    let r = row(&e, &names, &state.zone);
    let ctx = context! {
        page => "events",
        e => context! {
            link_id => r.link_id, id => r.id, time => r.time, actor => r.actor, actor_link => r.actor_link,
            impersonator => r.impersonator, impersonator_link => r.impersonator_link, type => r.resource_type,
            action => r.action, resource => r.resource, resource_id => r.resource_id, resource_link => r.resource_link,
            organization => r.organization,
            organization_id => shown_opt(&ev.organization_id), accessor_id => shown_opt(&ev.accessor_id),
            auth_type => shown_opt(&ev.auth_type), request_id => shown_opt(&ev.request_id),
            ingested => time_in(&state.zone, e.ingested_at), seq => e.seq, pretty => pretty,
            explain => r.explain,
        },
    };
    render(&state, StatusCode::OK, "event.html", ctx)
}

/// The range of an investigation page: `since` and `until` as the events page takes
/// them (all time by default); `window` for the "around" view.
#[derive(Debug, Default, Deserialize)]
struct RangeParams {
    since: Option<String>,
    until: Option<String>,
    window: Option<String>,
}

impl RangeParams {
    fn filter(&self) -> Result<EventFilter, String> {
        let params = Params { since: self.since.clone(), until: self.until.clone(), ..Params::default() };
        params.parse(Origin::Form, None, 50).map(|q| q.filter)
    }

    fn view(&self) -> minijinja::Value {
        context! { since => self.since, until => self.until, window => self.window }
    }
}

/// At most this many events are listed on a resource page or an "around" view; the
/// page says when there were more, and how to narrow it.
const PAGE_EVENTS: usize = 500;

/// A page that could not be made: the reason, shown above an empty page.
fn refused(state: &AppState, template: &str, code: StatusCode, message: String, ctx: minijinja::Value) -> Response {
    render(state, code, template, context! { error => message, ..ctx })
}

/// What an actor or resource page shows, from `f` given the id `asked` stands for (a
/// name resolved) and the page's time range; a bad range or name is refused on
/// `template` with `base`, the page's context.
async fn investigate_id<T: Send + 'static>(
    state: &AppState,
    template: &str,
    range: &RangeParams,
    asked: String,
    base: &minijinja::Value,
    f: impl FnOnce(&dyn Store, String, EventFilter) -> Result<T, InvestigateError> + Send + 'static,
) -> Result<T, Response> {
    let refuse = |message: String| refused(state, template, StatusCode::BAD_REQUEST, message, base.clone());
    let filter = range.filter().map_err(refuse)?;
    let found = investigating(state, move |store| {
        let id = tfaudit_investigate::resolve_id(store, asked.trim())?;
        f(store, id, filter)
    })
    .await?;
    found.map_err(|e| refuse(shown(&e.to_string())))
}

/// `/actors/{id}`: everything about one accessor (`tfaudit who`): what it did, the
/// tokens it created and what they did after, its impersonations and alerts. The id
/// may be a name the catalogue knows.
async fn actor(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(range): QueryParams<RangeParams>,
) -> Response {
    let base = context! { page => "events", range => range.view(), asked => shown(&id) };
    let found = investigate_id(&state, "actor.html", &range, id, &base, |store, id, filter| {
        let who = tfaudit_investigate::who(store, &id, &filter)?;
        let history = store.name_history(&id)?;
        Ok((who, history))
    })
    .await;
    let (who, history) = match found {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut more: Vec<&str> = vec![who.trail.id.as_str()];
    more.extend(who.tokens.iter().flat_map(|t| [t.id.as_str(), t.created_by.as_str()]));
    more.extend(who.trail.impersonations.iter().filter_map(|i| i.as_accessor.as_deref()));
    let names = match names_of(&state, ids_of([], &more)).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let zone = &state.zone;
    let trail = |t: &tfaudit_investigate::Trail| {
        context! {
            id => shown(&t.id), link => t.id, shown => names.show(&t.id),
            names => t.names.iter().map(|n| shown(n)).collect::<Vec<_>>(),
            first => time_opt_in(zone, t.first_seen), last => time_opt_in(zone, t.last_seen), events => t.events,
            actions => t.actions.iter().map(|a| context! {
                type => shown(&a.resource_type), action => shown(&a.action), count => a.events,
                type_link => a.resource_type, action_link => a.action,
            }).collect::<Vec<_>>(),
            impersonations => t.impersonations.iter().map(|i| context! {
                event_link => i.event_id, event_id => shown(&i.event_id), at => time_in(zone, i.at),
                as_link => i.as_accessor, as_shown => i.as_accessor.as_deref().map(|a| names.show(a)),
            }).collect::<Vec<_>>(),
        }
    };
    let ctx = context! {
        who => trail(&who.trail),
        tokens => who.tokens.iter().map(|t| context! {
            link => t.id, shown => names.show(&t.id), created => time_in(zone, t.created_at),
            by_link => t.created_by, by => names.show(&t.created_by), event_link => t.event_id, event_id => shown(&t.event_id),
            trail => trail(&t.trail),
        }).collect::<Vec<_>>(),
        alerts => who.alerts.iter().map(|a| context! {
            id => a.id, raised => time_in(zone, a.raised_at), severity => shown(&a.severity), title => shown(&a.title),
            rule => shown(&a.rule), event_link => a.event_id, by_link => a.by, by => names.show(&a.by),
        }).collect::<Vec<_>>(),
        names_history => name_rows(zone, &history),
        truncated => who.truncated, max_tokens => tfaudit_investigate::MAX_TOKENS,
        ..base
    };
    render(&state, StatusCode::OK, "actor.html", ctx)
}

/// Every name an id has had, newest first, as the actor and resource pages list them.
fn name_rows(zone: &TimeZone, history: &[tfaudit_store::NameRecord]) -> Vec<minijinja::Value> {
    history
        .iter()
        .map(|r| {
            context! {
                name => shown(&r.name), email => r.email.as_deref().map(shown), kind => r.kind.as_str(),
                first => time_in(zone, r.first_seen), last => time_in(zone, r.last_seen),
                gone => r.gone.map(|g| time_in(zone, g)), listed => r.listed,
            }
        })
        .collect()
}

/// `/resources/{id}`: the life of one resource (`tfaudit history`): every event about
/// it or naming it as a whole id, oldest first. The id may be a name.
async fn resource(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(range): QueryParams<RangeParams>,
) -> Response {
    let base = context! { page => "events", range => range.view(), asked => shown(&id) };
    let found = investigate_id(&state, "resource.html", &range, id, &base, |store, id, filter| {
        let mut events = Vec::new();
        let total = tfaudit_investigate::history(store, &id, &filter, &mut |e| {
            if events.len() < PAGE_EVENTS {
                events.push(e);
            }
            Ok(true)
        })?;
        let history = store.name_history(&id)?;
        Ok((id, events, total, history))
    })
    .await;
    let (id, events, total, history) = match found {
        Ok(x) => x,
        Err(r) => return r,
    };
    let names = match names_of(&state, ids_of(&events, &[&id])).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let ctx = context! {
        id => shown(&id), link => id, shown => names.show(&id), total => total, limit => PAGE_EVENTS,
        events => events.iter().map(|e| row(e, &names, &state.zone)).collect::<Vec<_>>(),
        names_history => name_rows(&state.zone, &history),
        ..base
    };
    render(&state, StatusCode::OK, "resource.html", ctx)
}

/// `/events/{id}/around?window=10m`: what the same actor did in the same
/// organization within `window` before and after one event (`query --around`).
async fn around(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(range): QueryParams<RangeParams>,
) -> Response {
    let window_text = range.window.as_deref().map(str::trim).filter(|w| !w.is_empty()).unwrap_or("10m").to_owned();
    let base =
        context! { page => "events", range => range.view(), window => shown(&window_text), link_id => id.clone() };
    let window = match tfaudit_config::parse_duration(&window_text) {
        Ok(w) => w,
        Err(e) => {
            return refused(
                &state,
                "around.html",
                StatusCode::BAD_REQUEST,
                format!("window: {}", shown(&e.to_string())),
                base,
            );
        }
    };
    let found = investigating(&state, move |store| {
        let (filter, anchor) = tfaudit_investigate::around(store, &id, window, EventFilter::default())?;
        let mut events = Vec::new();
        let mut total = 0usize;
        store.events(&filter, Order::OldestFirst, None, &mut |e| {
            if tfaudit_investigate::same_actor(&anchor, &e) {
                total += 1;
                if events.len() < PAGE_EVENTS {
                    events.push(e);
                }
            }
            Ok(())
        })?;
        Ok((anchor, events, total))
    })
    .await;
    let (anchor, events, total) = match found {
        Err(r) => return r,
        Ok(Err(e)) => {
            let code =
                if matches!(e, InvestigateError::NoEvent(_)) { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
            return refused(&state, "around.html", code, shown(&e.to_string()), base);
        }
        Ok(Ok(x)) => x,
    };
    let names = match names_of(&state, ids_of(events.iter().chain([&anchor]), &[])).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let ctx = context! {
        anchor => row(&anchor, &names, &state.zone), anchor_id => anchor.event.id,
        events => events.iter().map(|e| row(e, &names, &state.zone)).collect::<Vec<_>>(),
        total => total, limit => PAGE_EVENTS,
        windows => ["1m", "10m", "1h", "1d"],
        ..base
    };
    render(&state, StatusCode::OK, "around.html", ctx)
}

async fn alerts(State(state): State<AppState>, QueryParams(params): QueryParams<AlertParams>) -> Response {
    // A bad filter is said, above every alert unfiltered.
    let (filter, limit, problem) = match params.filter(Origin::Form) {
        Ok((filter, limit)) => (filter, limit, None),
        Err(message) => (AlertFilter::default(), 100, Some(message)),
    };
    let (list, status) =
        match blocking(&state.store, move |store| Ok((store.alerts(&filter, limit)?, store.alert_status(0)?))).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let alerts: Vec<minijinja::Value> = list
        .iter()
        .map(|a| {
            context! {
                id => a.id, raised => time_in(&state.zone, a.raised_at), severity => a.severity, rule => shown(&a.rule), title => shown(&a.title),
                event_id => a.event_id,
                deliveries => a.deliveries.iter().map(|d| context! {
                    destination => shown(&d.destination), state => d.state.as_str(), attempts => d.attempts,
                    last_error => shown_opt(&d.last_error),
                }).collect::<Vec<_>>(),
            }
        })
        .collect();
    let code = if problem.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    render(
        &state,
        code,
        "alerts.html",
        context! { page => "alerts", alerts => alerts, status => status, error => problem },
    )
}

async fn status(State(state): State<AppState>) -> Response {
    let (sources, listed, alert_status, checkpoint, verification) = match blocking(&state.store, move |store| {
        let sources = store.status()?;
        let mut listed = HashMap::new();
        for s in &sources {
            if let Some(t) = store.listed_at(&s.name)? {
                listed.insert(s.name.clone(), t);
            }
        }
        Ok((sources, listed, store.alert_status(0)?, store.latest_checkpoint()?, store.latest_verification(false)?))
    })
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let integrity = context! {
        checkpoint => checkpoint.map(|c| context! {
            size => c.size, made => time_in(&state.zone, c.made_at), signed_by => c.signed_by.as_deref().map(shown), note => shown(&c.note),
        }),
        verification => verification.map(|v| context! {
            at => time_in(&state.zone, v.at), size => v.size, finding => v.finding.as_deref().map(shown),
        }),
    };
    let assessments = state.health.assess(&sources);
    let organizations: Vec<minijinja::Value> = sources
        .iter()
        .map(|s| {
            let a = assessments.iter().find(|a| a.name == s.name);
            let last_run = s.last_run.as_ref().map_or_else(
                || "never".to_owned(),
                |r| {
                    let result = match &r.result {
                        None => "did not finish".to_owned(),
                        Some(tfaudit_store::RunResult::Failed(e)) => format!("failed: {}", shown(e)),
                        Some(other) => other.label().to_owned(),
                    };
                    format!("{} — {result}; {} pages, {} new events", time_in(&state.zone, r.started_at), r.tally.pages, r.tally.new_events)
                },
            );
            context! {
                name => shown(&s.name), organization_id => shown_opt(&s.organization_id), address => shown(&s.address), events => s.events,
                oldest => time_opt_in(&state.zone, s.oldest), newest => time_opt_in(&state.zone, s.newest), cursor => time_opt_in(&state.zone, s.cursor),
                last_run => last_run, last_success => time_opt_in(&state.zone, s.last_success), rejects => s.rejects,
                synced_by => s.lease.as_ref().map_or_else(|| "no instance now".to_owned(), |l| format!("{} since {}", shown(&l.holder), time_in(&state.zone, l.since))),
                names_listed => listed.get(&s.name).map(|t| time_in(&state.zone, *t)),
                ready => a.is_none_or(|a| a.ready), reason => a.and_then(|a| a.reason.as_deref().map(shown)),
                gaps => s.gaps.iter().map(|g| context! { from => time_in(&state.zone, g.from), to => time_in(&state.zone, g.to), found => time_in(&state.zone, g.detected_at) }).collect::<Vec<_>>(),
            }
        })
        .collect();
    let engine = match alert_status.cursor {
        None => "not started".to_owned(),
        Some(c) if c >= alert_status.newest_seq => "up to date".to_owned(),
        Some(c) => format!("at event {c} of {}", alert_status.newest_seq),
    };
    render(
        &state,
        StatusCode::OK,
        "status.html",
        context! { page => "status", organizations => organizations, alert_status => alert_status, engine => engine, integrity => integrity },
    )
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], CSS).into_response()
}
