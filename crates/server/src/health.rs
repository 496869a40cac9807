//! `/healthz` (the process answers) and `/readyz` (the archive answers, and every
//! organization was synced successfully within three of its intervals; the body says
//! which one is behind, and why).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::AppState;

/// What readiness knows of each organization beyond the archive: its interval, and
/// the error of its latest sync.
#[derive(Debug, Default)]
pub struct Health {
    organizations: Vec<(String, Duration)>,
    errors: Mutex<HashMap<String, String>>,
}

impl Health {
    /// `organizations`: each name and its sync interval.
    #[must_use]
    pub fn new(organizations: Vec<(String, Duration)>) -> Self {
        Self { organizations, errors: Mutex::default() }
    }

    /// Records how a sync of `name` ended.
    pub fn record(&self, name: &str, error: Option<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match error {
            Some(e) => {
                errors.insert(name.to_owned(), e);
            }
            None => {
                errors.remove(name);
            }
        }
    }

    fn error(&self, name: &str) -> Option<String> {
        self.errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

fn human(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Whether one organization is current, and if not why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Assessment {
    pub name: String,
    pub ready: bool,
    pub last_success: Option<Timestamp>,
    pub reason: Option<String>,
}

impl Health {
    /// Judges every organization against what the archive says of it.
    #[must_use]
    pub fn assess(&self, sources: &[tfaudit_store::SourceStatus]) -> Vec<Assessment> {
        let now = Timestamp::now();
        self.organizations
            .iter()
            .map(|(name, interval)| {
                let last_success = sources.iter().find(|s| &s.name == name).and_then(|s| s.last_success);
                let allowed = SignedDuration::try_from(*interval * 3).unwrap_or(SignedDuration::MAX);
                let reason = match last_success {
                    None => Some("no successful sync yet".to_owned()),
                    Some(t) if now.duration_since(t) > allowed => Some(format!(
                        "last successful sync {} ago, more than 3 intervals ({})",
                        human(now.duration_since(t)),
                        human(SignedDuration::try_from(*interval).unwrap_or_default())
                    )),
                    Some(_) => None,
                };
                let ready = reason.is_none();
                let reason = match (reason, self.error(name)) {
                    (Some(r), Some(e)) => Some(format!("{r}; last error: {e}")),
                    (r, _) => r,
                };
                Assessment { name: name.clone(), ready, last_success, reason }
            })
            .collect()
    }
}

/// Without the access token: readiness and each organization's flag only. The
/// reasons carry the upstream address and error text, which are for operators.
pub async fn readyz(
    State(state): State<AppState>,
    authorized: Option<axum::Extension<crate::auth::Authorized>>,
) -> Response {
    let details = authorized.is_some_and(|a| a.0.0);
    let read = tfaudit_store::blocking(&state.store, move |store| {
        Ok::<_, tfaudit_store::StoreError>((store.status()?, store.alert_status(0)?))
    })
    .await;
    let (sources, alerts) = match read {
        Ok(read) => read,
        Err(e) => {
            // Why (a database server that does not answer, named by host) is for
            // operators, as the other details.
            let mut body = json!({"ready": false, "error": "the archive could not be read"});
            if details {
                body["detail"] = json!(tfaudit_api::redact::redact(&e.to_string()));
            }
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        }
    };
    let organizations = state.health.assess(&sources);
    let all_ready = organizations.iter().all(|o| o.ready);
    let status = if all_ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let organizations: Vec<serde_json::Value> = organizations
        .iter()
        .map(|o| if details { json!(o) } else { json!({"name": o.name, "ready": o.ready}) })
        .collect();
    // A misconfigured destination is shown but does not make the service unready:
    // syncing goes on, and restarting the service would not fix the secret. Why it is
    // misconfigured (a receiver's answer) is a detail for operators.
    let misconfigured: Vec<serde_json::Value> =
        alerts.misconfigured.iter().map(|m| if details { json!(m) } else { json!({"name": m.name}) }).collect();
    let body = json!({"ready": all_ready, "organizations": organizations, "misconfigured_destinations": misconfigured});
    (status, axum::Json(body)).into_response()
}
