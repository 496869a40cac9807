//! An alert's title and text, from templates the user can override (minijinja syntax:
//! `{{ event.actor }}`, `{% if link %}…{% endif %}`). Rendering is plain text; each
//! destination escapes it for its own medium.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The default title.
pub const DEFAULT_TITLE: &str = "[{{ severity | upper }}] {{ rule.description }}";

/// The default text.
pub const DEFAULT_TEXT: &str = "\
{{ event.explanation }} in {{ event.organization }} at {{ event.time }}.
By {{ event.who }}{% if event.impersonator %}, impersonated by {{ event.impersonator }}{% endif %}{% if event.resource %}; resource {{ event.resource }}{% endif %}.
{% if count > 1 %}{{ count }} matching events between {{ window.start }} and {{ window.end }}{% if group %} for {{ group }}{% endif %}.
{% endif %}{% if first_seen %}Seen for the first time: {{ first_seen }}.
{% endif %}{% if workspace %}Workspace: {{ workspace }}
{% endif %}{% if link %}{{ link }}
{% endif %}Rule: {{ rule.name }} ({{ severity }})";

/// What templates can use.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub rule: RuleContext,
    pub severity: String,
    pub event: EventContext,
    /// Events counted (1 unless the rule has a threshold).
    pub count: u64,
    pub window: Option<WindowContext>,
    /// The group's value (actor, workspace, …) when the rule groups.
    pub group: Option<String>,
    /// The value seen for the first time, for first-seen rules.
    pub first_seen: Option<String>,
    pub workspace: Option<String>,
    pub run: Option<String>,
    /// A link to the workspace or run in HCP Terraform, when the event names one.
    pub link: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleContext {
    pub name: String,
    pub description: String,
    pub severity: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventContext {
    pub id: String,
    pub time: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub action: String,
    pub resource_id: Option<String>,
    /// The name (the event's description, else the catalogue's), else the accessor
    /// id, else "(system)".
    pub actor: String,
    /// The actor as `name (id)` where a name is known.
    pub who: String,
    /// The resource id as `name (id)` where a name is known.
    pub resource: Option<String>,
    /// The impersonator as `name (id)` where a name is known.
    pub impersonator: Option<String>,
    /// The catalogue's names of the event's accessor, impersonator and resource ids.
    pub names: std::collections::BTreeMap<String, String>,
    pub accessor_id: Option<String>,
    pub auth_type: Option<String>,
    pub impersonator_id: Option<String>,
    /// The name tfaudit knows the organization by.
    pub organization: String,
    pub organization_id: Option<String>,
    pub request_id: Option<String>,
    pub meta: serde_json::Value,
    /// The event in one line of plain words ("alice created a team API token at-…").
    pub explanation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowContext {
    pub start: String,
    pub end: String,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A missing value (or a field of one) renders as nothing rather than failing.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Plain text: no HTML escaping here; destinations escape for their medium.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(false);
    env
}

/// Checks that a template compiles.
///
/// # Errors
/// The template engine's message, in one line.
pub fn check_template(source: &str) -> Result<(), String> {
    environment()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| format!("template does not compile: {}", e.to_string().replace('\n', " ")))
}

/// Templates compiled once: each rule's own, the configured defaults, and the
/// built-in defaults to fall back on.
#[derive(Debug, Clone)]
pub struct Templates {
    env: Environment<'static>,
}

/// Which template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Title,
    Text,
}

impl Part {
    fn prefix(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Text => "text",
        }
    }
}

impl Templates {
    /// Compiles the templates. `rules` gives (rule name, title, text) overrides;
    /// `title`/`text` are the configured defaults. A template that does not compile is
    /// left out (rules and config are checked when loaded), so the default is used.
    #[must_use]
    pub fn new<'a>(
        rules: impl IntoIterator<Item = (&'a str, Option<&'a str>, Option<&'a str>)>,
        title: Option<&str>,
        text: Option<&str>,
    ) -> Self {
        let mut env = environment();
        let mut add = |name: String, source: &str| {
            if let Err(e) = env.add_template_owned(name, source.to_owned()) {
                tracing::warn!(error = %e, "an alert template does not compile; using the default");
            }
        };
        add("builtin:title".into(), DEFAULT_TITLE);
        add("builtin:text".into(), DEFAULT_TEXT);
        add("default:title".into(), title.unwrap_or(DEFAULT_TITLE));
        add("default:text".into(), text.unwrap_or(DEFAULT_TEXT));
        for (rule, rule_title, rule_text) in rules {
            if let Some(t) = rule_title {
                add(format!("rule:title:{rule}"), t);
            }
            if let Some(t) = rule_text {
                add(format!("rule:text:{rule}"), t);
            }
        }
        Self { env }
    }

    /// Renders a rule's title or text: its own template, else the configured default,
    /// else the built-in one (also the fallback when rendering fails, for instance on
    /// a filter given the wrong type).
    #[must_use]
    pub fn render(&self, part: Part, rule: &str, context: &Context) -> String {
        let own = format!("rule:{}:{rule}", part.prefix());
        let chosen = if self.env.get_template(&own).is_ok() { own } else { format!("default:{}", part.prefix()) };
        match self.env.get_template(&chosen).and_then(|t| t.render(context)) {
            Ok(text) => text.trim().to_owned(),
            Err(e) => {
                tracing::warn!(error = %e, rule, "an alert template failed; using the built-in one");
                self.env
                    .get_template(&format!("builtin:{}", part.prefix()))
                    .and_then(|t| t.render(context))
                    .map(|t| t.trim().to_owned())
                    .unwrap_or_default()
            }
        }
    }
}
