//! Names for ids. HCP Terraform's events name almost everything by id (`ws-…`,
//! `team-…`, `user-…`); people know them by name. tfaudit keeps a catalogue of
//! id → name with history, filled from two places: what events themselves say (the
//! accessor's `auth.description`, names inside `resource.meta`) and, with an
//! organization token, the organization's own listings.
//!
//! Names are written by the organization's users: untrusted text, escaped wherever shown.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameKind {
    Workspace,
    Project,
    Team,
    User,
    AgentPool,
    PolicySet,
    VariableSet,
    Stack,
}

impl NameKind {
    pub const ALL: [Self; 8] = [
        Self::Workspace,
        Self::Project,
        Self::Team,
        Self::User,
        Self::AgentPool,
        Self::PolicySet,
        Self::VariableSet,
        Self::Stack,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workspace => "workspace",
            Self::Project => "project",
            Self::Team => "team",
            Self::User => "user",
            Self::AgentPool => "agent_pool",
            Self::PolicySet => "policy_set",
            Self::VariableSet => "variable_set",
            Self::Stack => "stack",
        }
    }

    /// The kind an id's prefix says it is (`ws-` is a workspace), if any.
    #[must_use]
    pub fn of_id(id: &str) -> Option<Self> {
        let (prefix, rest) = id.split_once('-')?;
        if rest.is_empty() {
            return None;
        }
        Some(match prefix {
            "ws" => Self::Workspace,
            "prj" => Self::Project,
            "team" => Self::Team,
            "user" => Self::User,
            "apool" => Self::AgentPool,
            "polset" => Self::PolicySet,
            "varset" => Self::VariableSet,
            "st" | "stack" => Self::Stack,
            _ => return None,
        })
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NameKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| format!("{s:?} is not a kind of name"))
    }
}

/// One id seen with one name (and, for a user, an email).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Sighting {
    pub id: String,
    pub kind: NameKind,
    pub name: String,
    pub email: Option<String>,
}

/// The longest name kept: a name is user-written, and a page could carry huge ones.
pub const MAX_NAME_CHARS: usize = 256;

impl Sighting {
    /// A sighting of `id` named `name`, when both are usable: the id is a single token
    /// and the name is not empty (names are cut at [`MAX_NAME_CHARS`]).
    #[must_use]
    pub fn new(id: &str, kind: NameKind, name: &str, email: Option<&str>) -> Option<Self> {
        let id = id.trim();
        let name = name.trim();
        if id.is_empty() || id.len() > 128 || id.contains(char::is_whitespace) || name.is_empty() {
            return None;
        }
        // Nearly every name is short: one copy, not a character at a time.
        let cut = |s: &str| {
            // No more bytes than the bound: no more characters either.
            if s.len() <= MAX_NAME_CHARS {
                return s.to_owned();
            }
            s.char_indices().nth(MAX_NAME_CHARS).map_or(s, |(end, _)| &s[..end]).to_owned()
        };
        Some(Self {
            id: id.to_owned(),
            kind,
            name: cut(name),
            email: email.map(str::trim).filter(|e| !e.is_empty()).map(cut),
        })
    }
}

/// `name (id)` when a name is known, else the id.
#[must_use]
pub fn name_and_id(name: Option<&str>, id: &str) -> String {
    match name {
        Some(name) if name != id => format!("{name} ({id})"),
        _ => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_ids() {
        assert_eq!(NameKind::of_id("ws-8Hq1"), Some(NameKind::Workspace));
        assert_eq!(NameKind::of_id("team-Qx7"), Some(NameKind::Team));
        assert_eq!(NameKind::of_id("user-Zr6"), Some(NameKind::User));
        assert_eq!(NameKind::of_id("at-2kP"), None);
        assert_eq!(NameKind::of_id("ws-"), None);
        for k in NameKind::ALL {
            assert_eq!(k.as_str().parse::<NameKind>(), Ok(k));
        }
    }

    #[test]
    fn sightings_are_bounded_and_need_both_parts() {
        assert!(Sighting::new("ws-1", NameKind::Workspace, "  ", None).is_none());
        assert!(Sighting::new("ws 1", NameKind::Workspace, "prod", None).is_none());
        let long = "x".repeat(1000);
        assert_eq!(Sighting::new("ws-1", NameKind::Workspace, &long, None).unwrap().name.len(), MAX_NAME_CHARS);
        // The bound counts characters, not bytes.
        let wide = "é".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            Sighting::new("ws-1", NameKind::Workspace, &wide, None).unwrap().name.chars().count(),
            MAX_NAME_CHARS
        );
        let fits = "é".repeat(MAX_NAME_CHARS - 1);
        assert_eq!(Sighting::new("ws-1", NameKind::Workspace, &fits, Some(&fits)).unwrap().email, Some(fits));
        assert_eq!(name_and_id(Some("prod"), "ws-1"), "prod (ws-1)");
        assert_eq!(name_and_id(None, "ws-1"), "ws-1");
    }
}
