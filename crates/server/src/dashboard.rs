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
use serde::Serialize;
use tfaudit_store::{AlertFilter, EventFilter, StoredEvent, Summary};

use crate::AppState;
use crate::api::{AlertParams, blocking, page};
use crate::filter::{Origin, Params};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/events/{id}", get(event))
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
    ] {
        env.add_template(name, source).expect("the dashboard's templates compile (a test renders each)");
    }
    env
}

fn render(state: &AppState, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    let page = state
        .templates
        .get_template(name)
        .and_then(|t| t.render(context! { version => env!("CARGO_PKG_VERSION"), ..ctx }));
    match page {
        Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, template = name, "a dashboard page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

fn time_opt(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "—".to_owned(), time)
}

/// An event as a table row shows it.
#[derive(Serialize)]
struct Row {
    /// As stored: only ever put into a URL, where `urlencode` escapes it.
    link_id: String,
    id: String,
    time: String,
    actor: String,
    impersonator: Option<String>,
    #[serde(rename = "type")]
    resource_type: String,
    action: String,
    resource_id: String,
    organization: String,
}

/// An event string made safe to show: HTML escaping is the template's job; this
/// makes invisible and reordering characters visible.
fn shown(s: &str) -> String {
    tfaudit_api::event::escape_invisible(s, false).into_owned()
}

fn shown_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(shown)
}

fn row(e: &StoredEvent) -> Row {
    let ev = &e.event;
    Row {
        link_id: ev.id.clone(),
        id: shown(&ev.id),
        time: time(ev.timestamp),
        actor: shown(ev.auth_description.as_deref().or(ev.accessor_id.as_deref()).unwrap_or("(system)")),
        impersonator: shown_opt(&ev.impersonator_id),
        resource_type: shown(ev.resource_type.as_deref().unwrap_or_default()),
        action: shown(ev.resource_action.as_deref().unwrap_or_default()),
        resource_id: shown(ev.resource_id.as_deref().unwrap_or_default()),
        organization: shown(&e.source),
    }
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
    let query = match params.parse(Origin::Form, None, 50) {
        Ok(q) => q,
        Err(message) => {
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
    let now = Timestamp::now();
    let since = query.filter.since.unwrap_or(now);
    let until = query.filter.until.unwrap_or(now);
    let range_label = match query.filter.until {
        Some(u) => format!("from {} to {}", time(since), time(u)),
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
            accessor_id => shown(&a.accessor_id), accessor_link => a.accessor_id, description => a.description.as_deref().map(shown), count => a.count,
        }).collect::<Vec<_>>(),
        by_kind => summary.by_kind.iter().map(|k| context! {
            resource_type => shown(&k.resource_type), action => shown(&k.action), count => k.count,
            type_link => k.resource_type, action_link => k.action,
        }).collect::<Vec<_>>(),
        events => events.iter().map(row).collect::<Vec<_>>(),
        next_url => next.as_deref().map(|c| url_with_cursor(&params, Some(c))),
        newest_url => url_with_cursor(&params, None),
    };
    render(&state, StatusCode::OK, "events.html", ctx)
}

fn params_view(p: &Params) -> minijinja::Value {
    context! { since => p.since, actor => p.actor, type => p.resource_type, action => p.action, org => p.org, text => p.text, cursor => p.cursor }
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
    let ev = &e.event;
    let pretty = tfaudit_api::event::escape_invisible(&tfaudit_api::event::pretty_json(&ev.raw), true).into_owned();
    let r = row(&e);
    let ctx = context! {
        page => "events",
        e => context! {
            link_id => r.link_id, id => r.id, time => r.time, actor => r.actor, impersonator => r.impersonator, type => r.resource_type,
            action => r.action, resource_id => r.resource_id, organization => r.organization,
            organization_id => shown_opt(&ev.organization_id), accessor_id => shown_opt(&ev.accessor_id),
            accessor_link => ev.accessor_id, resource_link => ev.resource_id,
            auth_type => shown_opt(&ev.auth_type), request_id => shown_opt(&ev.request_id),
            ingested => time(e.ingested_at), seq => e.seq, pretty => pretty,
            explain => shown(&tfaudit_model::explain(ev)),
        },
    };
    render(&state, StatusCode::OK, "event.html", ctx)
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
                id => a.id, raised => time(a.raised_at), severity => a.severity, rule => shown(&a.rule), title => shown(&a.title),
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
    let (sources, alert_status, checkpoint, verification) = match blocking(&state.store, move |store| {
        Ok((store.status()?, store.alert_status(0)?, store.latest_checkpoint()?, store.latest_verification(false)?))
    })
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let integrity = context! {
        checkpoint => checkpoint.map(|c| context! {
            size => c.size, made => time(c.made_at), signed_by => c.signed_by.as_deref().map(shown), note => shown(&c.note),
        }),
        verification => verification.map(|v| context! {
            at => time(v.at), size => v.size, finding => v.finding.as_deref().map(shown),
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
                    format!("{} — {result}; {} pages, {} new events", time(r.started_at), r.tally.pages, r.tally.new_events)
                },
            );
            context! {
                name => shown(&s.name), organization_id => shown_opt(&s.organization_id), address => shown(&s.address), events => s.events,
                oldest => time_opt(s.oldest), newest => time_opt(s.newest), cursor => time_opt(s.cursor),
                last_run => last_run, last_success => time_opt(s.last_success), rejects => s.rejects,
                synced_by => s.lease.as_ref().map_or_else(|| "no instance now".to_owned(), |l| format!("{} since {}", shown(&l.holder), time(l.since))),
                ready => a.is_none_or(|a| a.ready), reason => a.and_then(|a| a.reason.as_deref().map(shown)),
                gaps => s.gaps.iter().map(|g| context! { from => time(g.from), to => time(g.to), found => time(g.detected_at) }).collect::<Vec<_>>(),
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
