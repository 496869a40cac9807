//! The built-in rules: on by default, listed by `tfaudit rules list`, turned off with
//! `[alerts] disable = ["name"]`, replaced by a rule of the same name in the user's
//! rules file.

use crate::rules::{Origin, RuleError, RuleSet};

/// The built-in rules, as a rules file.
pub const BUILTIN: &str = r#"
[[rule]]
name = "token-created"
severity = "high"
description = "An API token was created"
match = { "resource.type" = "authentication_token", "resource.action" = "create" }

[[rule]]
name = "owner-added"
severity = "critical"
description = "Someone was added to the owners team"
match = { "resource.type" = "team", "resource.action" = "add_member", "meta.team.name" = "owners" }

[[rule]]
name = "organization-member-added"
severity = "medium"
description = "A user was added to the organization"
match = { "resource.type" = "organization_user", "resource.action" = "create" }

[[rule]]
name = "sso-changed"
severity = "critical"
description = "Single sign-on (SAML) settings were changed or disabled"
match = { "resource.type" = "saml_configuration", "resource.action" = ["create", "update", "destroy", "disable", "enable"] }

[[rule]]
name = "organization-settings-changed"
severity = "high"
description = "Organization settings were changed"
match = { "resource.type" = "organization", "resource.action" = ["update", "destroy"] }

[[rule]]
name = "policy-override"
severity = "high"
description = "A policy check or run task was overridden"
match = { "resource.type" = ["policy_check", "task_stage"], "resource.action" = "override" }

[[rule]]
name = "workspace-destroyed"
severity = "high"
description = "A workspace was deleted"
match = { "resource.type" = "workspace", "resource.action" = "destroy" }

[[rule]]
name = "destroy-run"
severity = "medium"
description = "A destroy run was applied"
match = { "resource.type" = "run", "resource.action" = "apply", "meta.run.is_destroy" = "true" }

[[rule]]
name = "team-access-changed"
severity = "medium"
description = "A team's access to a workspace changed"
match = { "resource.type" = "workspace", "resource.action" = ["add_team", "remove_team", "update_team_permissions"] }

[[rule]]
name = "data-retention-policy-removed"
severity = "medium"
description = "A data retention policy was removed"
match = { "resource.type" = "data_retention_policy", "resource.action" = "destroy" }

[[rule]]
name = "impersonation"
severity = "high"
description = "An action was taken by impersonating a user"
match = { "auth.type" = "Impersonated" }
group_by = "auth.impersonator_id"
quiet = "1h"

[[rule]]
name = "delete-burst"
severity = "high"
description = "Many deletions by one actor in a short time"
match = { "resource.action" = ["destroy", "force_cancel", "discard"] }
threshold = { count = 20, within = "10m" }
group_by = "actor"

[[rule]]
name = "night-activity"
severity = "low"
description = "Changes made in the middle of the night"
when = { not = { field = "resource.action", one_of = ["index", "show"] } }
time = { inside = "00:00-05:00" }
group_by = "actor"
quiet = "1h"

[[rule]]
name = "new-impersonator"
severity = "high"
description = "An impersonator never seen before"
first_seen = "impersonator"

[[rule]]
name = "new-accessor"
severity = "low"
description = "An accessor (user, team or token) never seen before"
first_seen = "accessor"

[[rule]]
name = "new-event-kind"
severity = "info"
description = "A kind of event (resource type and action) never seen before"
first_seen = "type_action"
"#;

/// The built-in rules; `timezone` is where their hours (night-activity) are read.
///
/// # Errors
/// Never in practice: a test parses the pack.
pub fn builtin(timezone: &jiff::tz::TimeZone) -> Result<RuleSet, RuleError> {
    RuleSet::parse("(built-in rules)", BUILTIN, &Origin::Builtin, timezone)
}
