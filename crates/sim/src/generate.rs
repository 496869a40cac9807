//! Realistic events: many resource types and actions, `meta` payloads, the three auth
//! types, impersonation, unknown future fields, unicode, and hostile strings (markup,
//! spreadsheet formulas, terminal escapes, bidi overrides, SQL).
//!
//! An event is a pure function of (seed, kind, index), so a simulator can serve a
//! million events without holding them.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Strings an attacker controls (names, messages) that every display must survive.
pub const HOSTILE: &[&str] = &[
    "<script>alert('tfaudit')</script>",
    "<img src=x onerror=alert(1)>",
    "=HYPERLINK(\"http://evil.example\",\"click\")",
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\u{1b}[31mred\u{1b}[0m \u{1b}]0;owned\u{7}",
    "line one\nline two\r\nline three",
    "\u{202e}gnp.exe",
    "'; DROP TABLE events; --",
    "Jürgen Groß 日本語 🚀 \u{0}nul",
    "tab\there",
];

const USERS: &[&str] = &["alice", "bob", "carol", "dmitri", "eve.ops", "frank-platform", "grace", "heidi"];
const WORKSPACES: &[&str] =
    &["prod-network", "prod-eks", "staging-app", "billing-api", "dns", "iam-baseline", "sandbox-42"];

/// (type, action, weight)
const KINDS: &[(&str, &str, u32)] = &[
    ("run", "create", 60),
    ("run", "apply", 40),
    ("run", "applied", 30),
    ("run", "cancel", 4),
    ("run", "force_cancel", 1),
    ("run", "discard", 5),
    ("run", "force_execute", 1),
    ("var", "index", 30),
    ("var", "show", 15),
    ("var", "create", 6),
    ("var", "update", 6),
    ("var", "destroy", 2),
    ("state_version", "index", 25),
    ("state_version", "show", 20),
    ("state_version", "create", 30),
    ("workspace", "create", 3),
    ("workspace", "update", 6),
    ("workspace", "destroy", 1),
    ("workspace", "add_team", 2),
    ("workspace", "remove_team", 1),
    ("workspace", "update_team_permissions", 1),
    ("authentication_token", "create", 3),
    ("authentication_token", "show", 2),
    ("authentication_token", "destroy", 2),
    ("organization_user", "create", 2),
    ("organization_user", "update", 1),
    ("organization_user", "destroy", 1),
    ("organization", "update", 1),
    ("saml_configuration", "update", 1),
    ("saml_configuration", "disable", 1),
    ("saml_configuration", "enable", 1),
    ("policy_check", "override", 2),
    ("task_stage", "override", 1),
    ("team", "add_member", 2),
    ("team", "remove_member", 1),
    ("project", "create", 1),
    ("project", "update", 1),
    ("oauth_client", "create", 1),
    ("oauth_token", "show", 1),
    ("ssh_key", "create", 1),
    ("notification_configuration", "update", 1),
    ("registry_module", "create", 1),
    ("registry_provider_version", "create", 1),
    ("run_trigger", "create", 1),
    ("policy_set", "update", 1),
    ("policy_version", "create", 1),
    ("agent", "update", 2),
    ("stack", "create", 1),
    ("stack_plan", "apply", 1),
    ("stacks-deployment_step", "advance", 1),
    ("data_retention_policy", "destroy", 1),
    // A type no documentation lists yet: an open set must take it.
    ("ai_change_summary", "generate", 1),
];

fn mix(mut x: u64) -> u64 {
    // splitmix64: a good 64-bit mixer for deriving independent streams.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A UUID-looking id, unique per (seed, stream, index).
#[must_use]
pub fn uuid(seed: u64, stream: u64, index: u64) -> String {
    let a = mix(seed ^ mix(stream.wrapping_mul(0x1000_0000_01b3) ^ index));
    let b = mix(a ^ index.rotate_left(17) ^ stream);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

fn short_id(rng: &mut SmallRng, prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let s: String = (0..16).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}-{s}")
}

/// `id`, after drawing the random id it replaces: the rest of the stream stays as it was.
fn kept_id(rng: &mut SmallRng, prefix: &str, id: &str) -> String {
    let _ = short_id(rng, prefix);
    id.to_owned()
}

/// The id of the user named `name`, as its events' accessor id.
fn user_id(name: &str) -> String {
    let i = USERS.iter().position(|u| *u == name).unwrap_or(0);
    format!("user-{}{}", ["MaPuLxAXvtq2PW", "Qx7bN2kLmR4sTu", "Hp3vW8cJd5eFgA", "Zr6tY1nBq9wKxL"][i % 4], i)
}

/// The id of the workspace named `name` (each name is one workspace).
fn workspace_id(name: &str) -> String {
    let i = WORKSPACES.iter().position(|w| *w == name).unwrap_or(0);
    format!("ws-Sim{i:02}{}", name.chars().filter(char::is_ascii_alphanumeric).take(10).collect::<String>())
}

/// One entry of an organization's listings, as the simulator serves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueEntry {
    /// The listing's path segment (`workspaces`, `teams`, `organization-memberships`…).
    pub listing: &'static str,
    pub id: String,
    pub name: String,
    /// For a membership: the user's email.
    pub email: Option<String>,
}

/// What the generated history names: its workspaces, users and teams, and one each of
/// the other kinds.
#[must_use]
pub fn default_catalogue() -> Vec<CatalogueEntry> {
    let entry = |listing, id: String, name: &str, email: Option<String>| CatalogueEntry {
        listing,
        id,
        name: name.to_owned(),
        email,
    };
    let mut out: Vec<CatalogueEntry> =
        WORKSPACES.iter().map(|w| entry("workspaces", workspace_id(w), w, None)).collect();
    for user in USERS {
        out.push(entry("organization-memberships", user_id(user), user, Some(format!("{user}@example.com"))));
    }
    for (i, team) in ["ci-pipeline", "owners", "platform"].iter().enumerate() {
        out.push(entry("teams", format!("team-Ci{i}Pipeline000{i}"), team, None));
    }
    out.push(entry("projects", "prj-SimDefault000001".into(), "Default Project", None));
    out.push(entry("agent-pools", "apool-SimPool0000001".into(), "on-prem-runners", None));
    out.push(entry("policy-sets", "polset-SimPolicies001".into(), "networking-guardrails", None));
    out.push(entry("varsets", "varset-SimAwsCreds001".into(), "aws-credentials", None));
    out
}

/// What varies between simulated organizations.
#[derive(Debug, Clone)]
pub struct Style {
    pub organization_id: String,
    /// Share of strings that are hostile.
    pub hostile: f64,
}

/// Renders one event in full, the slow way; templates are made from these.
fn full_event(seed: u64, stream: u64, index: u64, timestamp_secs: i64, style: &Style) -> Value {
    let mut rng = SmallRng::seed_from_u64(mix(seed ^ mix(stream ^ mix(index))));
    let total: u32 = KINDS.iter().map(|k| k.2).sum();
    let mut pick = rng.random_range(0..total);
    let (rtype, action) = KINDS
        .iter()
        .find(|k| {
            if pick < k.2 {
                true
            } else {
                pick -= k.2;
                false
            }
        })
        .map_or(("run", "create"), |k| (k.0, k.1));
    let text = |rng: &mut SmallRng, normal: &str| -> String {
        if rng.random_bool(style.hostile) {
            HOSTILE[rng.random_range(0..HOSTILE.len())].to_owned()
        } else {
            normal.to_owned()
        }
    };
    let user_index = rng.random_range(0..USERS.len());
    let accessor_id = format!(
        "user-{}{}",
        ["MaPuLxAXvtq2PW", "Qx7bN2kLmR4sTu", "Hp3vW8cJd5eFgA", "Zr6tY1nBq9wKxL"][user_index % 4],
        user_index
    );
    let roll: f64 = rng.random();
    let auth = if roll < 0.08 {
        json!({"accessor_id": null, "description": null, "type": "System", "impersonator_id": null, "organization_id": style.organization_id})
    } else if roll < 0.11 {
        json!({"accessor_id": accessor_id, "description": text(&mut rng, USERS[user_index]), "type": "Impersonated",
               "impersonator_id": "user-SupportAdmin0001", "organization_id": style.organization_id})
    } else if roll < 0.2 {
        let team = rng.random_range(0..3);
        let team_name = ["ci-pipeline", "owners", "platform"][team];
        json!({"accessor_id": format!("team-Ci{team}Pipeline000{team}"), "description": team_name,
               "type": "Client", "impersonator_id": null, "organization_id": style.organization_id})
    } else {
        json!({"accessor_id": accessor_id, "description": text(&mut rng, USERS[user_index]), "type": "Client",
               "impersonator_id": null, "organization_id": style.organization_id})
    };
    let workspace_name = WORKSPACES[rng.random_range(0..WORKSPACES.len())];
    // A workspace keeps its id (the draw is kept so that the rest of the stream does not
    // change with this).
    let _ = short_id(&mut rng, "ws");
    let workspace = json!({"id": workspace_id(workspace_name), "name": text(&mut rng, workspace_name)});
    let other_user = USERS[rng.random_range(0..USERS.len())];
    let resource_id = match rtype {
        "run" => short_id(&mut rng, "run"),
        "workspace" => workspace["id"].as_str().unwrap_or("ws-x").to_owned(),
        "authentication_token" => short_id(&mut rng, "at"),
        "var" => short_id(&mut rng, "var"),
        "state_version" => short_id(&mut rng, "sv"),
        // The owners team, always: teams keep their ids (the draw is kept, as above).
        "team" => {
            let _ = short_id(&mut rng, "team");
            "team-Ci1Pipeline0001".to_owned()
        }
        "policy_check" => short_id(&mut rng, "polchk"),
        "organization_user" => short_id(&mut rng, "ou"),
        _ => short_id(&mut rng, "res"),
    };
    let meta: Value = match (rtype, action) {
        ("policy_check", _) => json!({
            "run": {"id": short_id(&mut rng, "run"), "message": text(&mut rng, "Triggered via UI")},
            "workspace": workspace,
            "policy_check": {"result": {"passed": 3, "soft_failed": 1, "hard_failed": 0,
                "sentinel": {"data": {"sentinel-policy-networking": {"can-override": true, "result": false,
                    "policies": [{"policy": "restrict-egress", "result": false, "trace": {"rules": {"main": {"value": false, "position": {"line": 12}}}}}]}}}}}
        }),
        ("run", _) => {
            json!({"run": {"id": resource_id, "message": text(&mut rng, "Queued manually using Terraform"), "is_destroy": rng.random_bool(0.05)}, "workspace": workspace})
        }
        ("workspace", "add_team" | "remove_team" | "update_team_permissions") => json!({
            "team": {"id": kept_id(&mut rng, "team", "team-Ci2Pipeline0002"), "name": text(&mut rng, "platform")},
            "permissions": {"runs": "apply", "variables": "write", "state-versions": "read-outputs", "sentinel-mocks": "none", "workspace-locking": true},
            "workspace": workspace
        }),
        ("team", _) => json!({"team": {"id": resource_id, "name": text(&mut rng, "owners")},
                              "user": {"id": kept_id(&mut rng, "user", &user_id(other_user)), "username": text(&mut rng, other_user)}}),
        ("organization_user", _) => {
            json!({"user": {"id": short_id(&mut rng, "user"), "username": text(&mut rng, "newhire"), "email": "newhire@example.com"}})
        }
        ("var", _) => {
            json!({"workspace": workspace, "key": text(&mut rng, "AWS_REGION"), "sensitive": rng.random_bool(0.3)})
        }
        ("task_stage", _) => {
            json!({"run": {"id": short_id(&mut rng, "run")}, "task_results": [{"task_name": text(&mut rng, "snyk"), "status": "failed"}]})
        }
        ("stack" | "stack_plan" | "stacks-deployment_step", _) => {
            json!({"stack": {"id": short_id(&mut rng, "st"), "name": text(&mut rng, "core-stack")}, "deployment": "production"})
        }
        ("authentication_token", _) => {
            let token_type = ["organization", "team", "user", "audit_trails"][rng.random_range(0..4)];
            if rng.random_bool(0.5) { Value::Null } else { json!({"token_type": token_type}) }
        }
        _ => Value::Null,
    };
    let mut ev = json!({
        "id": uuid(seed, stream, index),
        "version": "0",
        "type": "Resource",
        "timestamp": jiff::Timestamp::from_second(timestamp_secs).map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string()).unwrap_or_default(),
        "auth": auth,
        "request": {"id": if rng.random_bool(0.05) { Value::Null } else { Value::String(uuid(seed ^ 0x5eed, stream, index)) }},
        "resource": {"id": resource_id, "type": rtype, "action": action, "meta": meta}
    });
    if rng.random_bool(0.03) {
        // Fields from the future: kept, never dropped.
        ev["origin"] = json!({"ip": "203.0.113.7", "user_agent": "terraform/1.15.0", "big": 12_345_678_901_234_567_890_u64, "ratio": 0.1});
    }
    ev
}

/// At most how many different event bodies a simulator draws from.
const MAX_TEMPLATES: u64 = 4096;

/// The parts of an event that are not its identity, rendered once; every event is one
/// of these with its own id, timestamp and request id. Rendering a page is then string
/// concatenation, so the simulator is never what a benchmark measures.
#[derive(Debug)]
struct Template {
    auth: String,
    resource: String,
    origin: Option<String>,
    null_request: bool,
}

/// Event bodies for one simulated organization.
#[derive(Debug)]
pub struct Catalog {
    seed: u64,
    templates: Vec<Template>,
}

impl Catalog {
    /// A catalog for a history of about `events` events (small histories need fewer
    /// bodies, and start faster).
    #[must_use]
    pub fn new(seed: u64, style: &Style, events: u64) -> Self {
        let templates = (0..events.clamp(256, MAX_TEMPLATES))
            .map(|k| {
                let v = full_event(seed, 7, k, 0, style);
                Template {
                    auth: v["auth"].to_string(),
                    resource: v["resource"].to_string(),
                    origin: v.get("origin").map(ToString::to_string),
                    null_request: v["request"]["id"].is_null(),
                }
            })
            .collect();
        Self { seed, templates }
    }

    /// Renders event `index` of `stream` as compact JSON.
    #[must_use]
    pub fn event(&self, stream: u64, index: u64, timestamp: &str) -> String {
        let t = &self.templates[(mix(self.seed ^ mix(stream ^ mix(index))) % self.templates.len() as u64) as usize];
        let mut out = String::with_capacity(t.auth.len() + t.resource.len() + 220);
        out.push_str("{\"id\":\"");
        out.push_str(&uuid(self.seed, stream, index));
        out.push_str("\",\"version\":\"0\",\"type\":\"Resource\",\"timestamp\":\"");
        out.push_str(timestamp);
        out.push_str("\",\"auth\":");
        out.push_str(&t.auth);
        if t.null_request {
            out.push_str(",\"request\":{\"id\":null}");
        } else {
            out.push_str(",\"request\":{\"id\":\"");
            out.push_str(&uuid(self.seed ^ 0x5eed, stream, index));
            out.push_str("\"}");
        }
        out.push_str(",\"resource\":");
        out.push_str(&t.resource);
        if let Some(origin) = &t.origin {
            out.push_str(",\"origin\":");
            out.push_str(origin);
        }
        out.push('}');
        out
    }
}

/// `2020-06-30T17:52:46.000Z`, as the API writes timestamps.
#[must_use]
pub fn timestamp(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string()).unwrap_or_default()
}

/// An element of `data` that is not a usable event.
#[must_use]
pub fn malformed(index: u64, nth: u64, timestamp_secs: i64) -> String {
    match nth % 4 {
        0 => format!("\"this is not an event (#{index})\""),
        1 => format!(
            r#"{{"version":"0","timestamp":"{}","note":"no id (#{index})"}}"#,
            jiff::Timestamp::from_second(timestamp_secs).map(|t| t.to_string()).unwrap_or_default()
        ),
        2 => index.to_string(),
        _ => format!(r#"{{"id":"bad-ts-{index}","timestamp":"not a time"}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_deterministic_and_parse() {
        let style = Style { organization_id: "org-Sim".into(), hostile: 0.3 };
        let catalog = Catalog::new(7, &style, 500);
        let again = Catalog::new(7, &style, 500);
        for i in 0..500 {
            let a = catalog.event(0, i, &timestamp(1_700_000_000));
            assert_eq!(a, again.event(0, i, &timestamp(1_700_000_000)));
            let v: Value = serde_json::from_str(&a).unwrap();
            assert_eq!(v["version"], "0");
            assert_eq!(v["timestamp"], "2023-11-14T22:13:20.000Z");
            assert_eq!(v["id"].as_str().unwrap().len(), 36);
        }
        assert_ne!(uuid(7, 0, 1), uuid(7, 0, 2));
        assert_ne!(uuid(7, 0, 1), uuid(7, 1, 1));
    }
}
