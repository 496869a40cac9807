//! An organization's listings — workspaces, projects, teams, members, agent pools,
//! policy sets, variable sets — read with an organization token for names (an audit
//! trail token can read only the audit trail).
//!
//! Each listing is JSON:API, paged by `page[number]`/`page[size]` (100 at most);
//! the next page is `meta.pagination.next-page`, else `links.next`, else none once a
//! page comes back short. Requests go through the client's limiter and retries. A
//! listing the token may not read (403, 404) is skipped and named, not fatal: names
//! are a convenience, and the rest still help.

use serde::Deserialize;
use tfaudit_model::{NameKind, Sighting};

use crate::client::{ApiError, Client};

/// The listings read, by path segment.
const LISTINGS: &[(&str, NameKind)] = &[
    ("workspaces", NameKind::Workspace),
    ("projects", NameKind::Project),
    ("teams", NameKind::Team),
    ("organization-memberships", NameKind::User),
    ("agent-pools", NameKind::AgentPool),
    ("policy-sets", NameKind::PolicySet),
    ("varsets", NameKind::VariableSet),
];

const PAGE_SIZE: u32 = 100;
/// A bound on one listing's pages: 100,000 objects; a server paging past it is wrong.
const MAX_PAGES: u64 = 1000;

/// What one fetch of the listings found.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub names: Vec<Sighting>,
    /// The kinds read completely (their missing ids are gone).
    pub complete: Vec<NameKind>,
    /// Listings skipped, each with why, in one line.
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    data: Vec<Resource>,
    #[serde(default)]
    included: Vec<Resource>,
    #[serde(default)]
    meta: Option<Meta>,
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Resource {
    id: Option<String>,
    #[serde(default)]
    attributes: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    relationships: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Meta {
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(rename = "next-page")]
    next_page: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Links {
    next: Option<serde_json::Value>,
}

fn text<'a>(attributes: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> Option<&'a str> {
    attributes.get(key).and_then(serde_json::Value::as_str)
}

impl Doc {
    /// Whether another page follows page `number`.
    fn has_next(&self, number: u64) -> bool {
        let pagination = self.meta.as_ref().and_then(|m| m.pagination.as_ref());
        if let Some(p) = pagination {
            return match &p.next_page {
                Some(serde_json::Value::Number(n)) => n.as_u64().is_some_and(|n| n > number),
                Some(serde_json::Value::String(s)) => s.parse::<u64>().is_ok_and(|n| n > number),
                _ => false,
            };
        }
        if let Some(links) = &self.links {
            return links.next.as_ref().is_some_and(|n| n.as_str().is_some_and(|s| !s.is_empty()));
        }
        self.data.len() as u64 >= u64::from(PAGE_SIZE)
    }

    /// The names on this page.
    fn names(&self, kind: NameKind, out: &mut Vec<Sighting>) {
        for r in &self.data {
            if kind == NameKind::User {
                // A membership names its user: the user's id and username come from
                // `included`, the email from the membership.
                let Some(user) = r.relationships.get("user").and_then(|u| u.get("data")).and_then(|d| d.get("id"))
                else {
                    continue;
                };
                let Some(user_id) = user.as_str() else { continue };
                let username = self
                    .included
                    .iter()
                    .find(|i| i.id.as_deref() == Some(user_id))
                    .and_then(|i| text(&i.attributes, "username"));
                let email = text(&r.attributes, "email");
                if let Some(s) = username.or(email).and_then(|name| Sighting::new(user_id, kind, name, email)) {
                    out.push(s);
                }
                continue;
            }
            if let (Some(id), Some(name)) = (r.id.as_deref(), text(&r.attributes, "name"))
                && let Some(s) = Sighting::new(id, kind, name, None)
            {
                out.push(s);
            }
        }
    }
}

/// Path segments are percent-encoded: an organization's name is the user's text.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    /// Reads every listing of `organization` (its name in HCP Terraform).
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] when the token is refused, and any error that is
    /// not about one listing (connection, retries spent); a listing the token may not
    /// read is skipped instead (see [`Fetched::skipped`]).
    pub async fn fetch_catalogue(&self, organization: &str) -> Result<Fetched, ApiError> {
        let mut fetched = Fetched::default();
        let org = segment(organization);
        for &(listing, kind) in LISTINGS {
            let mut names = Vec::new();
            let mut complete = false;
            for number in 1..=MAX_PAGES {
                let include = if kind == NameKind::User { "&include=user" } else { "" };
                let path = format!(
                    "/api/v2/organizations/{org}/{listing}?page%5Bnumber%5D={number}&page%5Bsize%5D={PAGE_SIZE}{include}"
                );
                let body = match self.get_body(&path, &format!("{listing} page {number}")).await {
                    Ok(body) => body,
                    Err(ApiError::NotEntitled { .. }) => {
                        fetched.skipped.push(format!("{listing}: not found (404) for this token or organization"));
                        break;
                    }
                    Err(ApiError::Refused { status, detail, .. }) => {
                        fetched.skipped.push(format!("{listing}: refused with {status}: {detail}"));
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let doc: Doc = match serde_json::from_slice(&body) {
                    Ok(doc) => doc,
                    Err(e) => {
                        fetched.skipped.push(format!("{listing}: page {number} is not a JSON:API document ({e})"));
                        break;
                    }
                };
                doc.names(kind, &mut names);
                if !doc.has_next(number) {
                    complete = true;
                    break;
                }
            }
            if complete {
                fetched.complete.push(kind);
            } else if !fetched.skipped.iter().any(|s| s.starts_with(listing)) {
                fetched.skipped.push(format!("{listing}: more than {MAX_PAGES} pages; read in part"));
            }
            fetched.names.append(&mut names);
        }
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_name_their_users_and_pages_say_what_follows() {
        let body = br#"{"data":[{"id":"ou-1","type":"organization-memberships","attributes":{"email":"a@x.io"},
            "relationships":{"user":{"data":{"id":"user-1","type":"users"}}}},
            {"id":"ou-2","attributes":{},"relationships":{}}],
            "included":[{"id":"user-1","type":"users","attributes":{"username":"alice"}}],
            "meta":{"pagination":{"current-page":1,"next-page":2}}}"#;
        let doc: Doc = serde_json::from_slice(body).unwrap();
        let mut names = Vec::new();
        doc.names(NameKind::User, &mut names);
        assert_eq!(names, vec![Sighting::new("user-1", NameKind::User, "alice", Some("a@x.io")).unwrap()]);
        assert!(doc.has_next(1));
        assert!(!doc.has_next(2), "a next page that is not after this one ends the walk");
        let last: Doc = serde_json::from_slice(br#"{"data":[],"meta":{"pagination":{"next-page":null}}}"#).unwrap();
        assert!(!last.has_next(1));
        let linked: Doc = serde_json::from_slice(br#"{"data":[],"links":{"next":"https://x/y?page=2"}}"#).unwrap();
        assert!(linked.has_next(1));
        assert_eq!(segment("my org/x"), "my%20org%2Fx");
    }
}
