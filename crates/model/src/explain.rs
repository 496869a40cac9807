//! One line in plain words for an event: "alice created a team API token at-…",
//! "ci (team) applied run run-… in workspace prod-network". Known type/action pairs
//! have their own sentence; everything else a generic one, so that every event reads.
//!
//! The words come from the event, which its organization's users partly wrote: the
//! line is untrusted text, to be escaped wherever it is shown.

use serde_json::Value;

use crate::AuditEvent;

/// The name of an id, where one is known (the catalogue's).
pub type NameOf<'a> = &'a dyn Fn(&str) -> Option<String>;

/// An id as the line shows it: `name (id)` where a name is known.
fn named(id: &str, names: NameOf<'_>) -> String {
    crate::name_and_id(names(id).as_deref(), id)
}

/// Who did it: the name, else the id; "the system"; with the impersonator.
fn actor(e: &AuditEvent, names: NameOf<'_>) -> String {
    let who = match (e.auth_description.as_deref(), e.accessor_id.as_deref(), e.auth_type.as_deref()) {
        (Some(name), Some(id), _) if id.starts_with("team-") => format!("{name} (team)"),
        (Some(name), _, _) => name.to_owned(),
        (None, Some(id), _) => named(id, names),
        (None, None, Some("System")) => "the system".to_owned(),
        (None, None, _) => "someone".to_owned(),
    };
    match &e.impersonator_id {
        Some(by) => format!("{} (as {who})", named(by, names)),
        None => who,
    }
}

/// A string at `path` in the event's `resource.meta`.
fn meta<'a>(root: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut at = root.get("resource")?.get("meta")?;
    for key in path {
        at = at.get(key)?;
    }
    at.as_str().filter(|s| !s.is_empty())
}

fn past(action: &str) -> String {
    match action {
        "create" => "created".into(),
        "update" => "updated".into(),
        "destroy" | "delete" => "deleted".into(),
        "show" | "read" | "index" => "read".into(),
        "apply" | "applied" => "applied".into(),
        "cancel" | "force_cancel" => "cancelled".into(),
        "discard" => "discarded".into(),
        "enable" => "enabled".into(),
        "disable" => "disabled".into(),
        "override" => "overrode".into(),
        "force_execute" => "force-executed".into(),
        other => other.replace('_', " "),
    }
}

/// The event in one line of plain words.
#[must_use]
pub fn explain(e: &AuditEvent) -> String {
    explain_with(e, &|_| None)
}

/// The event in one line of plain words, with the ids it would show as they are
/// shown as `name (id)` where `names` knows them.
#[must_use]
pub fn explain_with(e: &AuditEvent, names: NameOf<'_>) -> String {
    let root: Value = serde_json::from_str(&e.raw).unwrap_or(Value::Null);
    let who = actor(e, names);
    let kind = e.resource_type.as_deref().unwrap_or("");
    let action = e.resource_action.as_deref().unwrap_or("");
    let id = &e.resource_id.as_deref().map(|id| named(id, names)).unwrap_or_default();
    // A name the event carries is what it was called then; the catalogue names an
    // id the event gives alone.
    let or_named = |name: Option<&str>, id: Option<&str>| -> Option<String> {
        name.map(str::to_owned).or_else(|| id.map(|id| named(id, names)))
    };
    let workspace = or_named(meta(&root, &["workspace", "name"]), meta(&root, &["workspace", "id"]));
    let workspace = workspace.as_deref();
    let in_workspace = workspace.map(|w| format!(" in workspace {w}")).unwrap_or_default();
    let team = or_named(meta(&root, &["team", "name"]), meta(&root, &["team", "id"]));
    let team = team.as_deref();
    let user = or_named(meta(&root, &["user", "username"]), meta(&root, &["user", "id"]));
    let user = user.as_deref();
    match (kind, action) {
        ("authentication_token", "create") => {
            let token = meta(&root, &["token_type"]).map(|t| format!("{} ", t.replace('_', " "))).unwrap_or_default();
            format!("{who} created a {token}API token {id}")
        }
        ("authentication_token", "destroy") => format!("{who} deleted API token {id}"),
        ("authentication_token", "show") => format!("{who} read API token {id}"),
        ("run", "apply" | "applied") => format!("{who} applied run {id}{in_workspace}"),
        ("run", "create") => {
            let destroy = root.pointer("/resource/meta/run/is_destroy").and_then(Value::as_bool) == Some(true);
            format!("{who} queued {}run {id}{in_workspace}", if destroy { "a destroy " } else { "" })
        }
        ("run", a) => format!("{who} {} run {id}{in_workspace}", past(a)),
        ("workspace", "add_team") => {
            format!("{who} gave team {} access to workspace {}", team.unwrap_or("?"), workspace.unwrap_or(id.as_str()))
        }
        ("workspace", "remove_team") => {
            format!(
                "{who} removed team {}'s access to workspace {}",
                team.unwrap_or("?"),
                workspace.unwrap_or(id.as_str())
            )
        }
        ("workspace", "update_team_permissions") => {
            format!(
                "{who} changed team {}'s permissions on workspace {}",
                team.unwrap_or("?"),
                workspace.unwrap_or(id.as_str())
            )
        }
        ("workspace", a) => format!("{who} {} workspace {}", past(a), workspace.unwrap_or(id.as_str())),
        ("team", "add_member") => {
            format!("{who} added {} to team {}", user.unwrap_or("a user"), team.unwrap_or(id.as_str()))
        }
        ("team", "remove_member") => {
            format!("{who} removed {} from team {}", user.unwrap_or("a user"), team.unwrap_or(id.as_str()))
        }
        ("team", a) => format!("{who} {} team {}", past(a), team.unwrap_or(id.as_str())),
        ("organization_user", "create") => {
            format!("{who} invited {} to the organization", user.unwrap_or(id.as_str()))
        }
        ("organization_user", "destroy") => {
            format!("{who} removed {} from the organization", user.unwrap_or(id.as_str()))
        }
        ("organization_user", a) => format!("{who} {} the membership of {}", past(a), user.unwrap_or(id.as_str())),
        ("policy_check", "override") => format!("{who} overrode a failed policy check {id}{in_workspace}"),
        ("task_stage", "override") => format!("{who} overrode a failed run task stage {id}"),
        ("saml_configuration", a) => format!("{who} {} the organization's SAML single sign-on", past(a)),
        ("organization", a) => format!("{who} {} the organization's settings", past(a)),
        ("var", a) => {
            let key = meta(&root, &["key"]).map(|k| format!(" {k}")).unwrap_or_default();
            format!("{who} {} variable{key}{in_workspace}", past(a))
        }
        ("state_version", a) => format!("{who} {} a state version{in_workspace}", past(a)),
        ("data_retention_policy", "destroy") => format!("{who} removed a data retention policy"),
        ("", "") => format!("{who} did something (no resource type or action given)"),
        (k, a) => {
            let what = k.replace(['_', '-'], " ");
            if id.is_empty() { format!("{who} {} a {what}", past(a)) } else { format!("{who} {} {what} {id}", past(a)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(raw: &str) -> AuditEvent {
        AuditEvent::parse(&serde_json::value::RawValue::from_string(raw.to_owned()).unwrap()).unwrap()
    }

    #[test]
    fn known_pairs_read_as_sentences_and_anything_else_still_reads() {
        let token = event(
            r#"{"id":"e1","timestamp":"2026-11-05T10:00:00Z","auth":{"accessor_id":"user-1","description":"alice","type":"Client"},"resource":{"id":"at-1","type":"authentication_token","action":"create","meta":{"token_type":"team"}}}"#,
        );
        assert_eq!(explain(&token), "alice created a team API token at-1");
        let run = event(
            r#"{"id":"e2","timestamp":"2026-11-05T10:00:00Z","auth":{"accessor_id":"team-9","description":"ci","type":"Client"},"resource":{"id":"run-1","type":"run","action":"apply","meta":{"workspace":{"id":"ws-1","name":"prod-network"}}}}"#,
        );
        assert_eq!(explain(&run), "ci (team) applied run run-1 in workspace prod-network");
        let member = event(
            r#"{"id":"e3","timestamp":"2026-11-05T10:00:00Z","auth":{"accessor_id":"user-1","description":"alice","type":"Impersonated","impersonator_id":"user-admin"},"resource":{"id":"team-1","type":"team","action":"add_member","meta":{"team":{"id":"team-1","name":"owners"},"user":{"id":"user-2","username":"bob"}}}}"#,
        );
        assert_eq!(explain(&member), "user-admin (as alice) added bob to team owners");
        let system = event(
            r#"{"id":"e4","timestamp":"2026-11-05T10:00:00Z","auth":{"type":"System"},"resource":{"id":"x-1","type":"stacks-deployment_step","action":"advance"}}"#,
        );
        assert_eq!(explain(&system), "the system advance stacks deployment step x-1");
        let bare = event(r#"{"id":"e5","timestamp":"2026-11-05T10:00:00Z"}"#);
        assert_eq!(explain(&bare), "someone did something (no resource type or action given)");
    }

    #[test]
    fn known_names_show_beside_the_ids_the_event_gives_alone() {
        let names = |id: &str| match id {
            "user-admin" => Some("admin".to_owned()),
            "ws-1" => Some("prod-network".to_owned()),
            "at-1" => Some("deploy".to_owned()),
            _ => None,
        };
        let member = event(
            r#"{"id":"e3","timestamp":"2026-11-05T10:00:00Z","auth":{"accessor_id":"user-1","description":"alice","type":"Impersonated","impersonator_id":"user-admin"},"resource":{"id":"team-1","type":"team","action":"add_member","meta":{"team":{"id":"team-1","name":"owners"},"user":{"id":"user-2","username":"bob"}}}}"#,
        );
        assert_eq!(explain_with(&member, &names), "admin (user-admin) (as alice) added bob to team owners");
        // The event's own workspace name wins over the catalogue's (what it was called then).
        let run = event(
            r#"{"id":"e2","timestamp":"2026-11-05T10:00:00Z","auth":{"accessor_id":"team-9","description":"ci","type":"Client"},"resource":{"id":"run-1","type":"run","action":"apply","meta":{"workspace":{"id":"ws-1","name":"old-name"}}}}"#,
        );
        assert_eq!(explain_with(&run, &names), "ci (team) applied run run-1 in workspace old-name");
        let bare_ws = event(
            r#"{"id":"e6","timestamp":"2026-11-05T10:00:00Z","auth":{"accessor_id":"at-1","type":"Client"},"resource":{"id":"ws-1","type":"workspace","action":"lock"}}"#,
        );
        assert_eq!(explain_with(&bare_ws, &names), "deploy (at-1) lock workspace prod-network (ws-1)");
    }
}
