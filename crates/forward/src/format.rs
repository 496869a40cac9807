//! How a sink writes each event (`format`): `raw`, the event exactly as HCP
//! Terraform sent it; `ocsf`, OCSF API Activity (class 6003); `ecs`, the Elastic
//! Common Schema.
//!
//! Both mappings are lossless in the same way: what a field of the target schema
//! holds is taken from the event's indexed fields ([`AuditEvent`]), and every other
//! member of the original event, known or not, is carried as the server sent it
//! (OCSF's `unmapped`, ECS's `hcp_terraform` namespace). The original text is read
//! once, borrowed, and nested values such as `resource.meta` are copied as text,
//! never rebuilt, so that a sink in `ocsf` or `ecs` forwards nearly as fast as `raw`.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use tfaudit_model::AuditEvent;

/// A sink's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// The original event (default).
    #[default]
    Raw,
    /// OCSF API Activity (class 6003).
    Ocsf,
    /// Elastic Common Schema.
    Ecs,
}

impl Format {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Ocsf => "ocsf",
            Self::Ecs => "ecs",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Self::Raw),
            "ocsf" => Ok(Self::Ocsf),
            "ecs" => Ok(Self::Ecs),
            _ => Err(format!("format {s:?} is not known; the formats are: raw, ocsf, ecs")),
        }
    }
}

/// The event as `format` writes it, on one line.
#[must_use]
pub fn render(format: Format, event: &AuditEvent) -> String {
    match format {
        Format::Raw => one_line(&event.raw).into_owned(),
        Format::Ocsf => ocsf(event),
        Format::Ecs => ecs(event),
    }
}

/// JSON on one line: line breaks can only sit between JSON tokens (a string holds
/// them escaped), so as spaces they change no value, and a JSON-lines reader gets
/// one event per line whatever the server's layout.
#[must_use]
pub fn one_line(json: &str) -> Cow<'_, str> {
    if json.contains(['\n', '\r']) { Cow::Owned(json.replace(['\n', '\r'], " ")) } else { Cow::Borrowed(json) }
}

/// The OCSF schema version `ocsf` events declare (`metadata.version`) and are tested
/// against.
pub const OCSF_VERSION: &str = "1.8.0";
/// The ECS version `ecs` events declare (`ecs.version`) and are tested against.
pub const ECS_VERSION: &str = "9.4.0";

/// OCSF's API Activity class and its category (Application Activity).
const OCSF_CLASS_UID: i64 = 6003;
const OCSF_CATEGORY_UID: i64 = 6;

/// OCSF's activity for an action, with its name: `Other` (99) carries the action
/// itself as its name, as OCSF asks for values it has no id for.
fn activity(action: Option<&str>) -> (i64, &str) {
    match action {
        None | Some("") => (0, "Unknown"),
        Some("create") => (1, "Create"),
        Some("read" | "show" | "download" | "index") => (2, "Read"),
        Some("update") => (3, "Update"),
        Some("destroy" | "delete") => (4, "Delete"),
        Some(other) => (99, other),
    }
}

/// Actions that change something although they are none of create, update or delete.
fn is_change(action: &str) -> bool {
    matches!(
        action,
        "apply"
            | "cancel"
            | "force_cancel"
            | "discard"
            | "force_execute"
            | "override"
            | "enable"
            | "disable"
            | "lock"
            | "unlock"
            | "force_unlock"
            | "revoke"
            | "regenerate"
    ) || action.starts_with("add_")
        || action.starts_with("remove_")
        || action.starts_with("update_")
}

/// Whether an event is about identity and access (ECS's `iam` category) rather than
/// configuration: credentials, members, teams and their permissions, single sign-on.
fn is_iam(resource_type: &str, action: &str) -> bool {
    matches!(
        resource_type,
        "authentication_token"
            | "organization_user"
            | "organization_membership"
            | "organization_token"
            | "team"
            | "team_membership"
            | "team_token"
            | "user"
            | "user_token"
            | "saml_configuration"
    ) || matches!(action, "add_team" | "remove_team" | "update_team_permissions" | "add_member" | "remove_member")
}

/// `event.category` and `event.type`, as JSON arrays. Every event is an API call
/// (`api`); the second category is `iam` or `configuration`. Each type is one ECS
/// expects for both categories (ECS lists the expected types per category).
fn ecs_categorization(resource_type: Option<&str>, action: Option<&str>) -> (&'static str, &'static str) {
    let action = action.unwrap_or("");
    let iam = is_iam(resource_type.unwrap_or(""), action);
    let category = if iam { r#"["api","iam"]"# } else { r#"["api","configuration"]"# };
    let kind = match action {
        "create" => r#"["creation"]"#,
        "update" => r#"["change"]"#,
        "destroy" | "delete" => r#"["deletion"]"#,
        // `access` is not among the types ECS expects for `iam`.
        "read" | "show" | "download" | "index" if !iam => r#"["access"]"#,
        a if is_change(a) => r#"["change"]"#,
        _ => r#"["info"]"#,
    };
    (category, kind)
}

/// The event as OCSF API Activity (class 6003, with the `cloud` profile).
///
/// The audit trail says nothing of the caller's network address, yet API Activity
/// requires `src_endpoint`: it is `{"name":"Unknown"}`. `cloud.provider` (required by
/// the cloud profile) is `HCP`, the HashiCorp Cloud Platform on which HCP Terraform
/// runs, in the style of `AWS` or `GCP`. Whether an action succeeded is not in the
/// event: `status_id` is 0, unknown. Impersonation (`auth.type`, `impersonator_id`),
/// the event's `type` and any member OCSF has no attribute for are in `unmapped`, as
/// sent.
fn ocsf(event: &AuditEvent) -> String {
    let original = Original::read(&event.raw);
    let action = event.resource_action.as_deref();
    let (activity_id, activity_name) = activity(action);
    let mut j = Json::with_capacity(event.raw.len() + 700);
    j.begin();
    j.int("activity_id", activity_id);
    j.str("activity_name", activity_name);
    j.int("category_uid", OCSF_CATEGORY_UID);
    j.str("category_name", "Application Activity");
    j.int("class_uid", OCSF_CLASS_UID);
    j.str("class_name", "API Activity");
    j.int("type_uid", OCSF_CLASS_UID * 100 + activity_id);
    j.text("type_name", &["API Activity: ", activity_name]);
    j.int("severity_id", 1);
    j.str("severity", "Informational");
    j.int("status_id", 0);
    j.str("status", "Unknown");
    j.int("time", event.timestamp.as_millisecond());

    j.object("metadata");
    j.str("uid", &event.id);
    j.str("version", OCSF_VERSION);
    j.object("product");
    j.str("name", "HCP Terraform");
    j.str("vendor_name", "HashiCorp");
    j.object("feature");
    j.str("name", "Audit Trails");
    j.end();
    j.end();
    j.literal("profiles", r#"["cloud"]"#);
    let log_version = original.top.get("version").filter(|v| is_string_or_number(v));
    if let Some(version) = log_version {
        if version.get().starts_with('"') {
            j.raw("log_version", version);
        } else {
            j.str("log_version", version.get());
        }
    }
    j.end();

    j.object("actor");
    let accessor = event.accessor_id.as_deref();
    let description = event.auth_description.as_deref();
    let system = event.auth_type.as_deref() == Some("System");
    if accessor.is_none() && description.is_none() && system {
        // HCP Terraform acted by itself.
        j.str("app_name", "HCP Terraform");
    } else {
        j.object("user");
        if let Some(uid) = accessor {
            j.str("uid", uid);
        }
        match description {
            Some(name) => j.str("name", name),
            // A user needs a name or a uid.
            None if accessor.is_none() => j.str("name", "Unknown"),
            None => {}
        }
        let (type_id, type_name) = if system {
            (3, "System")
        } else if accessor.is_some_and(|a| a.starts_with("user-")) {
            (1, "User")
        } else {
            (0, "Unknown")
        };
        j.int("type_id", type_id);
        j.str("type", type_name);
        j.end();
    }
    j.end();

    j.object("api");
    j.key("operation");
    operation(&mut j.out, event);
    if let Some(uid) = &event.request_id {
        j.object("request");
        j.str("uid", uid);
        j.end();
    }
    j.end();

    // A resource needs a uid (or a name, which the event does not have).
    let resource = event.resource_id.as_deref();
    if let Some(uid) = resource {
        j.key("resources");
        j.out.push('[');
        j.begin();
        j.str("uid", uid);
        if let Some(kind) = &event.resource_type {
            j.str("type", kind);
        }
        if let Some(meta) = original.resource.as_ref().and_then(|r| r.get("meta")).filter(|m| !is_null(m)) {
            j.raw("data", meta);
        }
        j.end();
        j.out.push(']');
    }

    j.object("cloud");
    j.str("provider", "HCP");
    if let Some(org) = &event.organization_id {
        j.object("org");
        j.str("uid", org);
        j.end();
    }
    j.end();

    j.object("src_endpoint");
    j.str("name", "Unknown");
    j.end();

    j.object_if_any("unmapped", |j| {
        let top_taken = |k: &str| matches!(k, "id" | "timestamp") || (k == "version" && log_version.is_some());
        original.write_rest(j, top_taken, |section, k| match section {
            Section::Auth => match k {
                "accessor_id" => event.accessor_id.is_some(),
                "description" => event.auth_description.is_some(),
                "organization_id" => event.organization_id.is_some(),
                _ => false,
            },
            Section::Request => k == "id" && event.request_id.is_some(),
            Section::Resource => match k {
                "id" | "meta" => resource.is_some(),
                "type" => event.resource_type.is_some(),
                "action" => event.resource_action.is_some(),
                _ => false,
            },
        });
    });
    j.end();
    j.finish()
}

/// `<type>.<action>`, or what the event has of them.
fn operation(out: &mut String, event: &AuditEvent) {
    match (event.resource_type.as_deref(), event.resource_action.as_deref()) {
        (Some(kind), Some(action)) => string(out, &[kind, ".", action]),
        (Some(one), None) | (None, Some(one)) => string(out, &[one]),
        (None, None) => string(out, &["unknown"]),
    }
}

/// The event in the Elastic Common Schema.
///
/// `user.*` is who acted and `user.effective.*` the user whose privileges were
/// assumed (ECS's definition): without impersonation the accessor is the user; under
/// impersonation the impersonator is the user and the accessor (with its
/// description) the effective user. Everything that has no ECS field (the resource
/// with its `meta`, `auth.type`, the event's `type` and `version`, members unknown
/// today) is under `hcp_terraform`, as sent, for one `flattened` mapping: `meta`
/// changes shape from event to event and would otherwise grow the index's mapping
/// without bound, or conflict.
fn ecs(event: &AuditEvent) -> String {
    let original = Original::read(&event.raw);
    let mut j = Json::with_capacity(event.raw.len() + 400);
    j.begin();
    j.key("@timestamp");
    let _ = write!(j.out, "\"{:.3}\"", event.timestamp);
    j.object("ecs");
    j.str("version", ECS_VERSION);
    j.end();

    j.object("event");
    j.str("id", &event.id);
    j.str("kind", "event");
    let (category, kind) = ecs_categorization(event.resource_type.as_deref(), event.resource_action.as_deref());
    j.literal("category", category);
    j.literal("type", kind);
    if event.resource_type.is_some() || event.resource_action.is_some() {
        j.key("action");
        operation(&mut j.out, event);
    }
    j.str("provider", "hcp_terraform");
    j.end();

    let accessor = |j: &mut Json| {
        if let Some(id) = &event.accessor_id {
            j.str("id", id);
        }
        if let Some(name) = &event.auth_description {
            j.str("name", name);
        }
    };
    j.object_if_any("user", |j| match event.impersonator_id.as_deref() {
        Some(impersonator) => {
            j.str("id", impersonator);
            j.object_if_any("effective", accessor);
        }
        None => accessor(j),
    });
    if let Some(org) = &event.organization_id {
        j.object("organization");
        j.str("id", org);
        j.end();
    }
    if let Some(id) = &event.request_id {
        j.object("http");
        j.object("request");
        j.str("id", id);
        j.end();
        j.end();
    }

    j.object_if_any("hcp_terraform", |j| {
        let top_taken = |k: &str| matches!(k, "id" | "timestamp");
        original.write_rest(j, top_taken, |section, k| match section {
            Section::Auth => match k {
                "accessor_id" => event.accessor_id.is_some(),
                "description" => event.auth_description.is_some(),
                "organization_id" => event.organization_id.is_some(),
                "impersonator_id" => event.impersonator_id.is_some(),
                _ => false,
            },
            Section::Request => k == "id" && event.request_id.is_some(),
            // The resource is kept whole: ECS has no field for it.
            Section::Resource => false,
        });
    });
    j.end();
    j.finish()
}

/// The three nested objects of an event whose members are mapped one by one.
#[derive(Clone, Copy)]
enum Section {
    Auth,
    Request,
    Resource,
}

/// The original event, read once: its members and those of its nested objects, values
/// as the server wrote them.
struct Original<'a> {
    top: Members<'a>,
    auth: Option<Members<'a>>,
    request: Option<Members<'a>>,
    resource: Option<Members<'a>>,
}

impl<'a> Original<'a> {
    fn read(raw: &'a str) -> Self {
        // An archived event is a JSON object (checked when it was archived).
        let top = Members::of(raw).unwrap_or_default();
        let section = |key: &str| top.get(key).and_then(|v| Members::of(v.get()));
        let (auth, request, resource) = (section("auth"), section("request"), section("resource"));
        Self { top, auth, request, resource }
    }

    /// Writes every member not `taken` (nor null) as sent: top-level members whose key
    /// `top_taken` does not claim, and of `auth`, `request` and `resource` (when they
    /// are objects) the members `taken` does not claim, as objects of the same name.
    fn write_rest(&self, j: &mut Json, top_taken: impl Fn(&str) -> bool, taken: impl Fn(Section, &str) -> bool) {
        for (key, value) in &self.top.0 {
            if top_taken(key) || is_null(value) {
                continue;
            }
            let section = match &**key {
                "auth" => self.auth.as_ref().map(|m| (Section::Auth, m)),
                "request" => self.request.as_ref().map(|m| (Section::Request, m)),
                "resource" => self.resource.as_ref().map(|m| (Section::Resource, m)),
                _ => None,
            };
            match section {
                Some((section, members)) => j.object_if_any(key, |j| {
                    for (k, v) in &members.0 {
                        if !taken(section, k) && !is_null(v) {
                            j.raw(k, v);
                        }
                    }
                }),
                None => j.raw(key, value),
            }
        }
    }
}

fn is_null(value: &RawValue) -> bool {
    value.get().trim() == "null"
}

fn is_string_or_number(value: &RawValue) -> bool {
    value.get().trim_start().starts_with(|c: char| c == '"' || c == '-' || c.is_ascii_digit())
}

/// An object's members in order: keys decoded, values as their original text.
#[derive(Default)]
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The members of `text` when it is a JSON object.
    fn of(text: &'a str) -> Option<Self> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((key, value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key.0, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// A member's name, borrowed unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object written member by member, straight into the line.
struct Json {
    out: String,
    /// Whether the next member is the first of its object (no comma before it).
    first: bool,
}

impl Json {
    fn with_capacity(capacity: usize) -> Self {
        Self { out: String::with_capacity(capacity), first: true }
    }

    fn begin(&mut self) {
        self.out.push('{');
        self.first = true;
    }

    fn end(&mut self) {
        self.out.push('}');
        self.first = false;
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        string(&mut self.out, &[key]);
        self.out.push(':');
    }

    fn object(&mut self, key: &str) {
        self.key(key);
        self.begin();
    }

    /// An object member that is left out when `members` writes nothing into it.
    fn object_if_any(&mut self, key: &str, members: impl FnOnce(&mut Self)) {
        let (mark, first) = (self.out.len(), self.first);
        self.object(key);
        let inside = self.out.len();
        members(self);
        if self.out.len() == inside {
            self.out.truncate(mark);
            self.first = first;
        } else {
            self.end();
        }
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        string(&mut self.out, &[value]);
    }

    /// A string member made of `parts`.
    fn text(&mut self, key: &str, parts: &[&str]) {
        self.key(key);
        string(&mut self.out, parts);
    }

    fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    /// A member whose value is JSON text written by this module.
    fn literal(&mut self, key: &str, json: &str) {
        self.key(key);
        self.out.push_str(json);
    }

    /// A member whose value is the original event's JSON, as sent (on one line).
    fn raw(&mut self, key: &str, value: &RawValue) {
        self.key(key);
        self.out.push_str(&one_line(value.get()));
    }

    fn finish(self) -> String {
        self.out
    }
}

/// Writes `parts` as one JSON string: quotes, backslashes and control characters
/// escaped, so that no event string can break the line or the document.
fn string(out: &mut String, parts: &[&str]) {
    out.push('"');
    for part in parts {
        let mut start = 0;
        for (i, b) in part.bytes().enumerate() {
            let escaped = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            out.push_str(&part[start..i]);
            if escaped.is_empty() {
                let _ = write!(out, "\\u{b:04x}");
            } else {
                out.push_str(escaped);
            }
            start = i + 1;
        }
        out.push_str(&part[start..]);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::{Value, json};

    use super::*;

    /// The JSON Schema of OCSF API Activity with the cloud profile, generated by
    /// scripts/format-fixtures from the OCSF schema release `OCSF_VERSION`.
    const OCSF_SCHEMA: &str = include_str!("../fixtures/ocsf-1.8.0-api_activity-cloud.schema.json");
    /// ECS's definitions of the fields of the field sets `ecs` writes, taken by
    /// scripts/format-fixtures from ECS `ECS_VERSION`.
    const ECS_FIELDS: &str = include_str!("../fixtures/ecs-9.4.0-fields.json");

    /// The sample event from HashiCorp's API documentation.
    const DOCUMENTED: &str = r#"{"id":"ae66e491-db59-457c-8445-9c908ee726ae","version":"0","type":"Resource","timestamp":"2020-06-30T17:52:46.000Z","auth":{"accessor_id":"user-MaPuLxAXvtq2PWTH","description":"pveverka","type":"Client","impersonator_id":null,"organization_id":"org-AGLwRmx1snv34Yts"},"request":{"id":"4df584d4-7e2a-01e6-6cc0-4adbefa020e6"},"resource":{"id":"at-sjt83qTw3GZatuPm","type":"authentication_token","action":"create","meta":null}}"#;

    fn event(text: &str) -> AuditEvent {
        AuditEvent::parse(&RawValue::from_string(text.to_owned()).unwrap()).unwrap()
    }

    /// Renders `text` in `format` and checks that it is one line of JSON.
    fn rendered(format: Format, text: &str) -> Value {
        let line = render(format, &event(text));
        assert!(!line.contains(['\n', '\r']), "not one line: {line}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn with(resource_type: &str, action: &str) -> String {
        let mut v: Value = serde_json::from_str(DOCUMENTED).unwrap();
        v["resource"]["type"] = json!(resource_type);
        v["resource"]["action"] = json!(action);
        v.to_string()
    }

    /// Events of every shape the tests know: documented pairs, odd fields,
    /// impersonation, hostile strings.
    fn corpus() -> Vec<String> {
        let mut texts = vec![DOCUMENTED.to_owned(), ODD.to_owned(), IMPERSONATED.to_owned(), SYSTEM.to_owned()];
        for (kind, action) in DOCUMENTED_PAIRS {
            texts.push(with(kind, action));
        }
        for hostile in tfaudit_sim::HOSTILE {
            texts.push(hostile_event(hostile).to_string());
        }
        texts
    }

    const DOCUMENTED_PAIRS: &[(&str, &str)] = &[
        ("authentication_token", "create"),
        ("authentication_token", "show"),
        ("authentication_token", "destroy"),
        ("organization_user", "update"),
        ("organization", "destroy"),
        ("saml_configuration", "enable"),
        ("saml_configuration", "disable"),
        ("policy_check", "override"),
        ("task_stage", "override"),
        ("var", "index"),
        ("var", "read"),
        ("state_version", "download"),
        ("run", "apply"),
        ("run", "applied"),
        ("run", "force_cancel"),
        ("stacks-deployment_step", "create"),
        ("workspace", "add_team"),
        ("workspace", "update_team_permissions"),
        ("team", "add_member"),
        ("data_retention_policy", "delete"),
        ("registry_module", "brand_new_action"),
    ];

    /// Odd but archivable: no auth, request an array, a numeric resource id, a
    /// resource type that is an object, `meta` pretty-printed, `version` a number,
    /// members unknown today.
    const ODD: &str = "{\"id\":\"odd-1\",\"timestamp\":\"2024-02-29T23:59:59Z\",\"version\":0,\"type\":null,\
        \"request\":[1,2],\"resource\":{\"id\":42,\"type\":{\"a\":1},\"action\":\"frobnicate\",\
        \"meta\":{\n  \"deep\": [\n    {\"x\": null}\n  ]\n},\"extra\":true},\"origin\":{\"ip\":\"203.0.113.7\"}}";

    const IMPERSONATED: &str = r#"{"id":"imp-1","version":"0","type":"Resource","timestamp":"2024-01-01T00:00:00.000Z","auth":{"accessor_id":"user-Victim","description":"victim","type":"Impersonated","impersonator_id":"user-SupportAdmin0001","organization_id":"org-1"},"request":{"id":null},"resource":{"id":"ws-1","type":"workspace","action":"update","meta":{"workspace":{"id":"ws-1"}}}}"#;

    const SYSTEM: &str = r#"{"id":"sys-1","version":"0","type":"Resource","timestamp":"2024-01-01T00:00:00.000Z","auth":{"accessor_id":null,"description":null,"type":"System","impersonator_id":null,"organization_id":"org-1"},"request":{"id":"r-1"},"resource":{"id":"run-1","type":"run","action":"applied","meta":null}}"#;

    /// `s` wherever an event holds a string the server took from a user: names,
    /// types, actions, `meta` keys and values, member names unknown today.
    fn hostile_event(s: &str) -> Value {
        json!({
            "id": format!("h-{s}"), "version": "0", "type": "Resource", "timestamp": "2024-01-01T00:00:00.000Z",
            "auth": {"accessor_id": s, "description": s, "type": s, "impersonator_id": s, "organization_id": s, s: s},
            "request": {"id": s, s: s},
            "resource": {"id": s, "type": s, "action": s, "meta": {s: [s, {"run": {"message": s}}]}, s: s},
            s: {"k": s}
        })
    }

    #[test]
    fn activity_follows_the_action() {
        for (action, id, name) in [
            ("create", 1, "Create"),
            ("read", 2, "Read"),
            ("show", 2, "Read"),
            ("download", 2, "Read"),
            ("index", 2, "Read"),
            ("update", 3, "Update"),
            ("destroy", 4, "Delete"),
            ("delete", 4, "Delete"),
            ("apply", 99, "apply"),
            ("override", 99, "override"),
            ("add_member", 99, "add_member"),
            ("", 0, "Unknown"),
        ] {
            let o = rendered(Format::Ocsf, &with("var", action));
            assert_eq!(o["activity_id"], id, "{action}");
            assert_eq!(o["activity_name"], name, "{action}");
            assert_eq!(o["type_uid"], 600_300 + id, "{action}");
            assert_eq!(o["type_name"], format!("API Activity: {name}"), "{action}");
            assert_eq!(o["api"]["operation"], format!("var.{action}"));
        }
        let mut v: Value = serde_json::from_str(DOCUMENTED).unwrap();
        v["resource"].as_object_mut().unwrap().remove("action");
        let o = rendered(Format::Ocsf, &v.to_string());
        assert_eq!((o["activity_id"].clone(), o["type_uid"].clone()), (json!(0), json!(600_300)));
        assert_eq!(o["api"]["operation"], "authentication_token");
    }

    #[test]
    fn ecs_categorization_follows_type_and_action() {
        for (kind, action, category, types) in [
            ("var", "create", "configuration", "creation"),
            ("var", "show", "configuration", "access"),
            ("state_version", "download", "configuration", "access"),
            ("var", "update", "configuration", "change"),
            ("project", "destroy", "configuration", "deletion"),
            ("run", "apply", "configuration", "change"),
            ("run", "applied", "configuration", "info"),
            ("policy_check", "override", "configuration", "change"),
            ("authentication_token", "create", "iam", "creation"),
            ("authentication_token", "show", "iam", "info"),
            ("team", "add_member", "iam", "change"),
            ("workspace", "update_team_permissions", "iam", "change"),
            ("organization_user", "destroy", "iam", "deletion"),
        ] {
            let e = rendered(Format::Ecs, &with(kind, action));
            assert_eq!(e["event"]["category"], json!(["api", category]), "{kind}.{action}");
            assert_eq!(e["event"]["type"], json!([types]), "{kind}.{action}");
            assert_eq!(e["event"]["action"], format!("{kind}.{action}"));
        }
    }

    #[test]
    fn the_documented_event_in_ocsf() {
        assert_eq!(
            rendered(Format::Ocsf, DOCUMENTED),
            json!({
                "activity_id": 1, "activity_name": "Create",
                "category_uid": 6, "category_name": "Application Activity",
                "class_uid": 6003, "class_name": "API Activity",
                "type_uid": 600_301, "type_name": "API Activity: Create",
                "severity_id": 1, "severity": "Informational", "status_id": 0, "status": "Unknown",
                "time": 1_593_539_566_000_i64,
                "metadata": {
                    "uid": "ae66e491-db59-457c-8445-9c908ee726ae", "version": OCSF_VERSION,
                    "product": {"name": "HCP Terraform", "vendor_name": "HashiCorp", "feature": {"name": "Audit Trails"}},
                    "profiles": ["cloud"], "log_version": "0"
                },
                "actor": {"user": {"uid": "user-MaPuLxAXvtq2PWTH", "name": "pveverka", "type_id": 1, "type": "User"}},
                "api": {"operation": "authentication_token.create", "request": {"uid": "4df584d4-7e2a-01e6-6cc0-4adbefa020e6"}},
                "resources": [{"uid": "at-sjt83qTw3GZatuPm", "type": "authentication_token"}],
                "cloud": {"provider": "HCP", "org": {"uid": "org-AGLwRmx1snv34Yts"}},
                "src_endpoint": {"name": "Unknown"},
                "unmapped": {"type": "Resource", "auth": {"type": "Client"}}
            })
        );
    }

    #[test]
    fn the_documented_event_in_ecs() {
        assert_eq!(
            rendered(Format::Ecs, DOCUMENTED),
            json!({
                "@timestamp": "2020-06-30T17:52:46.000Z",
                "ecs": {"version": ECS_VERSION},
                "event": {
                    "id": "ae66e491-db59-457c-8445-9c908ee726ae", "kind": "event",
                    "category": ["api", "iam"], "type": ["creation"],
                    "action": "authentication_token.create", "provider": "hcp_terraform"
                },
                "user": {"id": "user-MaPuLxAXvtq2PWTH", "name": "pveverka"},
                "organization": {"id": "org-AGLwRmx1snv34Yts"},
                "http": {"request": {"id": "4df584d4-7e2a-01e6-6cc0-4adbefa020e6"}},
                "hcp_terraform": {
                    "version": "0", "type": "Resource", "auth": {"type": "Client"},
                    "resource": {"id": "at-sjt83qTw3GZatuPm", "type": "authentication_token", "action": "create"}
                }
            })
        );
    }

    #[test]
    fn odd_fields_are_carried_not_lost() {
        let o = rendered(Format::Ocsf, ODD);
        assert_eq!(o["time"], 1_709_251_199_000_i64);
        assert_eq!(o["activity_id"], 99);
        assert_eq!(o["activity_name"], "frobnicate");
        assert_eq!(o["metadata"]["log_version"], "0", "a number as its text");
        assert_eq!(o["actor"], json!({"user": {"name": "Unknown", "type_id": 0, "type": "Unknown"}}));
        assert_eq!(o["api"], json!({"operation": "frobnicate"}));
        assert_eq!(o["resources"], json!([{"uid": "42", "data": {"deep": [{"x": null}]}}]));
        assert_eq!(o["cloud"], json!({"provider": "HCP"}));
        assert_eq!(
            o["unmapped"],
            json!({"request": [1, 2], "resource": {"type": {"a": 1}, "extra": true}, "origin": {"ip": "203.0.113.7"}})
        );
        let e = rendered(Format::Ecs, ODD);
        assert_eq!(e["@timestamp"], "2024-02-29T23:59:59.000Z");
        assert!(e.get("user").is_none() && e.get("organization").is_none() && e.get("http").is_none(), "{e}");
        assert_eq!(e["event"]["action"], "frobnicate");
        assert_eq!(
            e["hcp_terraform"],
            json!({
                "version": 0, "request": [1, 2], "origin": {"ip": "203.0.113.7"},
                "resource": {"id": 42, "type": {"a": 1}, "action": "frobnicate", "meta": {"deep": [{"x": null}]}, "extra": true}
            })
        );
        // Only the members of the original: nothing but `id` and `timestamp` is
        // missing from what is mapped and what is carried.
        let minimal = r#"{"id":"m","timestamp":"2024-01-01T00:00:00Z"}"#;
        let o = rendered(Format::Ocsf, minimal);
        assert!(o.get("unmapped").is_none() && o.get("resources").is_none(), "{o}");
        let e = rendered(Format::Ecs, minimal);
        assert!(e.get("hcp_terraform").is_none() && e.get("user").is_none(), "{e}");
    }

    #[test]
    fn impersonation() {
        let o = rendered(Format::Ocsf, IMPERSONATED);
        assert_eq!(o["actor"]["user"]["uid"], "user-Victim");
        assert_eq!(o["unmapped"]["auth"], json!({"type": "Impersonated", "impersonator_id": "user-SupportAdmin0001"}));
        assert!(o["api"].get("request").is_none(), "a null request id is no request");
        // ECS: the user is who acted, the effective user the one whose privileges
        // were assumed.
        let e = rendered(Format::Ecs, IMPERSONATED);
        assert_eq!(
            e["user"],
            json!({"id": "user-SupportAdmin0001", "effective": {"id": "user-Victim", "name": "victim"}})
        );
        assert_eq!(e["hcp_terraform"]["auth"], json!({"type": "Impersonated"}));
        assert_eq!(e["event"]["type"], json!(["change"]));

        let s = rendered(Format::Ocsf, SYSTEM);
        assert_eq!(s["actor"], json!({"app_name": "HCP Terraform"}));
        let e = rendered(Format::Ecs, SYSTEM);
        assert!(e.get("user").is_none(), "{e}");
    }

    #[test]
    fn hostile_strings_stay_strings_on_one_line() {
        for s in tfaudit_sim::HOSTILE.iter().copied().chain(["\"}]},{\"x\":\"", "\\", "\u{7f}\u{2028}\u{2029}", ""]) {
            let text = hostile_event(s).to_string();
            let o = rendered(Format::Ocsf, &text);
            assert_eq!(o["actor"]["user"]["name"], s);
            assert_eq!(o["api"]["operation"], format!("{s}.{s}"));
            assert_eq!(o["resources"][0]["data"], json!({s: [s, {"run": {"message": s}}]}));
            assert_eq!(o["unmapped"][s], json!({"k": s}));
            assert_eq!(o["unmapped"]["auth"][s], s);
            if !s.is_empty() {
                assert_eq!(o["activity_name"], s);
                assert_eq!(o["type_name"], format!("API Activity: {s}"));
            }
            let e = rendered(Format::Ecs, &text);
            assert_eq!(e["user"]["effective"]["name"], s);
            assert_eq!(e["hcp_terraform"][s], json!({"k": s}));
            assert_eq!(e["hcp_terraform"]["resource"]["meta"], json!({s: [s, {"run": {"message": s}}]}));
        }
    }

    #[test]
    fn ocsf_events_are_valid_api_activity() {
        let schema: Value = serde_json::from_str(OCSF_SCHEMA).unwrap();
        assert_eq!(schema["$id"].as_str().map(|id| id.contains(OCSF_VERSION)), Some(true), "{}", schema["$id"]);
        assert_eq!(schema["properties"]["class_uid"]["const"], OCSF_CLASS_UID);
        let validator = jsonschema::validator_for(&schema).unwrap();
        for text in corpus() {
            let o = rendered(Format::Ocsf, &text);
            let errors: Vec<String> =
                validator.iter_errors(&o).map(|e| format!("{e} at {}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{text}\n{o}\n{errors:#?}");
        }
        // The schema refuses what OCSF refuses, so the check above can fail.
        let mut bad = rendered(Format::Ocsf, DOCUMENTED);
        bad["activity_id"] = json!(5);
        assert!(!validator.is_valid(&bad));
        let mut bad = rendered(Format::Ocsf, DOCUMENTED);
        bad.as_object_mut().unwrap().remove("src_endpoint");
        assert!(!validator.is_valid(&bad));
        let mut bad = rendered(Format::Ocsf, DOCUMENTED);
        bad["actor"]["user"]["flavour"] = json!("x");
        assert!(!validator.is_valid(&bad));
    }

    /// Leaf fields of an ECS document by dotted name; arrays of scalars are leaves.
    fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
        match value {
            Value::Object(members) => {
                for (k, v) in members {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    leaves(&name, v, out);
                }
            }
            leaf => out.push((prefix.to_owned(), leaf.clone())),
        }
    }

    #[test]
    fn ecs_events_use_ecs_fields_and_values() {
        let ecs: Value = serde_json::from_str(ECS_FIELDS).unwrap();
        assert_eq!(ecs["ecs_version"], ECS_VERSION);
        let namespaces: BTreeSet<&str> =
            ecs["namespaces"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(!namespaces.contains("hcp_terraform"), "the custom namespace must not be an ECS one");
        let fields: &serde_json::Map<String, Value> = ecs["fields"].as_object().unwrap();
        let allowed = |name: &str| -> BTreeMap<String, Option<Vec<String>>> {
            fields[name]["allowed_values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let expected = a["expected_event_types"]
                        .as_array()
                        .map(|t| t.iter().filter_map(Value::as_str).map(str::to_owned).collect());
                    (a["name"].as_str().unwrap().to_owned(), expected)
                })
                .collect()
        };
        let (kinds, categories, types) = (allowed("event.kind"), allowed("event.category"), allowed("event.type"));
        assert!(categories.contains_key("iam") && types.contains_key("creation"), "{categories:?}");
        let mut texts = corpus();
        for (kind, action) in [("var", "show"), ("team", "show"), ("run", "apply"), ("x", "y"), ("team", "destroy")] {
            texts.push(with(kind, action));
        }
        for text in texts {
            let e = rendered(Format::Ecs, &text);
            let mut out = Vec::new();
            leaves("", &e, &mut out);
            for (name, value) in out {
                if name == "hcp_terraform" || name.starts_with("hcp_terraform.") {
                    continue;
                }
                let field = fields.get(&name).unwrap_or_else(|| panic!("{name} is not an ECS field: {e}"));
                let is_array = field["normalize"].as_array().is_some_and(|n| n.iter().any(|x| x == "array"));
                let values: Vec<&Value> = match &value {
                    Value::Array(items) if is_array => items.iter().collect(),
                    other => vec![other],
                };
                for v in &values {
                    match field["type"].as_str().unwrap() {
                        "keyword" | "constant_keyword" | "wildcard" | "match_only_text" => {
                            assert!(v.is_string(), "{name}: {v} is not a string");
                        }
                        "date" => {
                            let text = v.as_str().unwrap_or_else(|| panic!("{name}: {v}"));
                            assert!(text.parse::<jiff::Timestamp>().is_ok(), "{name}: {text}");
                        }
                        other => panic!("{name}: type {other} is not expected here"),
                    }
                }
                if let Some(allowed) = field["allowed_values"].as_array() {
                    for v in &values {
                        assert!(allowed.iter().any(|a| a["name"] == **v), "{name}: {v} is not an allowed value");
                    }
                }
            }
            assert!(kinds.contains_key(e["event"]["kind"].as_str().unwrap()));
            // Every type is one ECS expects for each of the categories.
            for category in e["event"]["category"].as_array().unwrap() {
                let expected = categories[category.as_str().unwrap()].clone().unwrap_or_default();
                for t in e["event"]["type"].as_array().unwrap() {
                    assert!(expected.iter().any(|x| x == t), "{category} does not expect {t}: {e}");
                }
            }
            assert!(e["@timestamp"].is_string() && e["ecs"]["version"] == ECS_VERSION && e["event"]["id"].is_string());
        }
    }

    #[test]
    fn raw_is_the_original_on_one_line() {
        assert_eq!(render(Format::Raw, &event(DOCUMENTED)), DOCUMENTED);
        assert_eq!(
            render(Format::Raw, &event("{\"id\":\"a\",\n\"timestamp\":\"2024-01-01T00:00:00Z\"}")).lines().count(),
            1
        );
    }
}
