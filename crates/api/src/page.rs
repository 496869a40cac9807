//! One page of the audit trail listing.
//!
//! The documented body is `{"data":[...], "pagination":{...}}` with snake_case keys.
//! Other HCP Terraform endpoints put JSON:API pagination under `meta.pagination` with
//! kebab-case keys, and older clients saw `0` where `null` was meant; all of these
//! readings are accepted. What decides where a walk goes is [`Page::next_page`].

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{AuditEvent, RejectedEvent};

mod scan;

/// The server's `pagination` object. Every field is optional: a page is read even when
/// the server leaves some out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Pagination {
    #[serde(default, alias = "current-page", deserialize_with = "page_number")]
    pub current_page: Option<u64>,
    #[serde(default, alias = "prev-page", deserialize_with = "page_number")]
    pub prev_page: Option<u64>,
    /// `None` both when the key is absent and when it is `null` (or `0`): see
    /// [`Pagination::has_next_page_key`].
    #[serde(default, alias = "next-page", deserialize_with = "page_number")]
    pub next_page: Option<u64>,
    #[serde(default, alias = "total-pages", deserialize_with = "count")]
    pub total_pages: Option<u64>,
    #[serde(default, alias = "total-count", deserialize_with = "count")]
    pub total_count: Option<u64>,
    #[serde(default, alias = "page-size", deserialize_with = "count")]
    pub page_size: Option<u64>,
    #[serde(skip)]
    has_next_page_key: bool,
}

impl Pagination {
    /// Whether the server sent a `next_page` key at all (as opposed to leaving it out).
    #[must_use]
    pub fn has_next_page_key(&self) -> bool {
        self.has_next_page_key
    }
}

/// A page of events as received.
#[derive(Debug)]
pub struct Page {
    /// The page number that was asked for.
    pub number: u64,
    /// The elements of `data` that are events, in the page's order.
    pub events: Vec<AuditEvent>,
    /// The elements of `data` that are not (not an object, no id, not JSON, an invalid
    /// UTF-8 byte), each with its text and why, set aside so that the rest of the page
    /// can be stored.
    pub rejects: Vec<RejectedEvent>,
    pub pagination: Option<Pagination>,
}

/// Why a 200 response is not a page.
#[derive(Debug, thiserror::Error)]
#[error("the body is not an audit trail page: {0}")]
pub struct NotAPage(String);

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    pagination: Option<Box<RawValue>>,
}

impl Page {
    /// Reads a response body.
    ///
    /// Each element of `data` is read as an event where it starts. One that does not
    /// read as an event is found on the body's structure, read on bytes, and set aside
    /// in [`Page::rejects`] with why (an invalid UTF-8 byte, a bad escape, no id)
    /// instead of costing the events beside it.
    ///
    /// # Errors
    /// [`NotAPage`] when the body is not structurally JSON (for instance cut short) or
    /// has no `data` array.
    pub fn parse(number: u64, body: &[u8]) -> Result<Self, NotAPage> {
        let mut events = Vec::new();
        // Each element is read as an event where it starts, in the text that follows it
        // up to the next invalid UTF-8 byte, if any. One that does not read as an event
        // (an element holding the invalid byte among them) is scanned for its end and
        // read on its own, to say why. That reads its text as the first reading did, so
        // it is a reject: were it an event, it would be kept, after the page's others.
        // The text from where an element starts to the next invalid byte: validated once
        // for all the elements in it.
        let mut valid: (usize, &str) = (0, "");
        let top = scan::top_level(body, &mut |at| {
            if at < valid.0 || at >= valid.0 + valid.1.len() {
                let rest = &body[at..];
                valid = match std::str::from_utf8(rest) {
                    Ok(text) => (at, text),
                    Err(e) => (at, std::str::from_utf8(&rest[..e.valid_up_to()]).ok()?),
                };
            }
            let (event, len) = AuditEvent::parse_prefix(valid.1.get(at - valid.0..)?)?;
            events.push(event);
            Some(len)
        })?;
        // `"data": null` reads as an empty page; a body without the key is not a page.
        let elements = top.data.ok_or_else(|| NotAPage("no \"data\" array".into()))?;
        let mut rejects = Vec::new();
        for element in elements {
            match element_text(element).and_then(AuditEvent::parse_owned) {
                Ok(event) => events.push(event),
                Err(rejected) => rejects.push(rejected),
            }
        }
        let json = |what: &str, bytes: &[u8]| -> Result<Box<RawValue>, NotAPage> {
            serde_json::from_slice(bytes).map_err(|e| NotAPage(format!("unreadable {what}: {e}")))
        };
        let pagination_text = match (top.pagination, top.meta) {
            (Some(p), _) => Some(json("pagination", p)?),
            (None, Some(m)) => {
                let meta: Option<Meta> =
                    serde_json::from_slice(m).map_err(|e| NotAPage(format!("unreadable meta: {e}")))?;
                meta.and_then(|m| m.pagination)
            }
            (None, None) => None,
        };
        let pagination = match pagination_text {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            Some(raw) => {
                let mut p: Pagination =
                    serde_json::from_str(raw.get()).map_err(|e| NotAPage(format!("unreadable pagination: {e}")))?;
                p.has_next_page_key = ["\"next_page\"", "\"next-page\""].iter().any(|k| raw.get().contains(k));
                Some(p)
            }
        };
        Ok(Self { number, events, rejects, pagination })
    }

    /// Elements the page holds, readable or not.
    #[must_use]
    pub fn len(&self) -> usize {
        self.events.len() + self.rejects.len()
    }

    /// Whether the page holds no element at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of the page that follows this one, or `None` at the end of the walk.
    ///
    /// An empty page is the end, whatever else the server says. Otherwise the walk
    /// goes on when either `next_page` or `current_page < total_pages` says there is
    /// more, and when the server sends neither; it ends only when what the server sent
    /// agrees that this was the last page. Where the signals disagree, going on costs
    /// one request and stopping could cost events. The next page is always this
    /// number + 1, never a number the server skips to, and never guessed from the page
    /// size asked for (a server may cap it).
    #[must_use]
    pub fn next_page(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        let more = match &self.pagination {
            None => true,
            Some(p) => {
                let by_next = p.has_next_page_key.then_some(p.next_page.is_some());
                let current = p.current_page.unwrap_or(self.number);
                let by_total = p.total_pages.map(|total| current < total);
                match (by_next, by_total) {
                    (None, None) => true,
                    (a, b) => a.unwrap_or(false) || b.unwrap_or(false),
                }
            }
        };
        more.then_some(self.number + 1)
    }

    /// The page number the server says it sent, when it says one different from the
    /// number asked for (a server that ignored `page[number]` would otherwise be walked
    /// forever).
    #[must_use]
    pub fn mismatched_page_number(&self) -> Option<u64> {
        self.pagination.as_ref().and_then(|p| p.current_page).filter(|&c| c != self.number)
    }

    /// Total events the server says match, when it says.
    #[must_use]
    pub fn total_count(&self) -> Option<u64> {
        self.pagination.as_ref().and_then(|p| p.total_count)
    }
}

/// One element's bytes as text, or the reason they are not, with its bytes kept
/// (invalid bytes written as `\xNN`). Whether the text is JSON is told once, when it
/// is read as an event: checked here as well, it cost a sync 3% of its CPU.
fn element_text(bytes: &[u8]) -> Result<String, RejectedEvent> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(e) => {
            let mut raw = String::with_capacity(bytes.len() + 8);
            for chunk in bytes.utf8_chunks() {
                raw.push_str(chunk.valid());
                for b in chunk.invalid() {
                    raw.push_str(&format!("\\x{b:02X}"));
                }
            }
            Err(RejectedEvent::new(raw, &format!("invalid UTF-8 at byte {} (shown as \\xNN)", e.valid_up_to())))
        }
    }
}

/// Page numbers: `null`, absent, `0` and unreadable values all mean "no such page".
fn page_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(count(d)?.filter(|&n| n > 0))
}

/// Counts may arrive as numbers or numeric strings.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(number: u64, body: &str) -> Page {
        Page::parse(number, body.as_bytes()).unwrap()
    }

    #[test]
    fn documented_pagination() {
        let p = page(
            1,
            r#"{"data":[{"id":"a"}],"pagination":{"current_page":1,"prev_page":null,"next_page":2,"total_pages":8,"total_count":778}}"#,
        );
        assert_eq!(p.next_page(), Some(2));
        assert_eq!(p.total_count(), Some(778));
        let last = page(
            8,
            r#"{"data":[{"id":"a"}],"pagination":{"current_page":8,"prev_page":7,"next_page":null,"total_pages":8,"total_count":778}}"#,
        );
        assert_eq!(last.next_page(), None);
    }

    #[test]
    fn zero_means_none_as_older_clients_saw_it() {
        let p = page(
            3,
            r#"{"data":[{"id":"a"}],"pagination":{"current_page":3,"prev_page":2,"next_page":0,"total_pages":3}}"#,
        );
        assert_eq!(p.next_page(), None);
    }

    #[test]
    fn json_api_meta_pagination_with_kebab_keys() {
        let p = page(
            1,
            r#"{"data":[{"id":"a"}],"meta":{"pagination":{"current-page":1,"next-page":2,"total-pages":2,"total-count":"1500"}}}"#,
        );
        assert_eq!(p.next_page(), Some(2));
        assert_eq!(p.total_count(), Some(1500));
    }

    #[test]
    fn without_next_page_key_uses_totals_then_empty_page() {
        let p = page(1, r#"{"data":[{"id":"a"}],"pagination":{"current_page":1,"total_pages":2}}"#);
        assert_eq!(p.next_page(), Some(2));
        let p = page(2, r#"{"data":[{"id":"a"}],"pagination":{"current_page":2,"total_pages":2}}"#);
        assert_eq!(p.next_page(), None);
        let p = page(4, r#"{"data":[{"id":"a"}]}"#);
        assert_eq!(p.next_page(), Some(5));
        let p = page(5, r#"{"data":[],"pagination":{"next_page":6}}"#);
        assert_eq!(p.next_page(), None, "an empty page ends the walk");
    }

    #[test]
    fn the_next_page_is_always_the_following_number() {
        let p = page(3, r#"{"data":[{"id":"a"}],"pagination":{"current_page":3,"next_page":7}}"#);
        assert_eq!(p.next_page(), Some(4));
    }

    #[test]
    fn disagreeing_signals_go_on() {
        let p = page(2, r#"{"data":[{"id":"a"}],"pagination":{"current_page":2,"next_page":null,"total_pages":5}}"#);
        assert_eq!(p.next_page(), Some(3));
    }

    #[test]
    fn a_server_ignoring_the_page_number_is_noticed() {
        let p = page(2, r#"{"data":[{"id":"a"}],"pagination":{"current_page":1,"next_page":2}}"#);
        assert_eq!(p.mismatched_page_number(), Some(1));
        assert_eq!(page(2, r#"{"data":[]}"#).mismatched_page_number(), None);
    }

    #[test]
    fn null_data_is_an_empty_page() {
        let p = page(3, r#"{"data":null,"pagination":{"next_page":4}}"#);
        assert!(p.is_empty());
        assert_eq!(p.next_page(), None);
    }

    const AT: &str = r#""timestamp":"2024-01-01T00:00:00Z""#;

    fn raws(p: &Page) -> (Vec<&str>, Vec<&str>) {
        (p.events.iter().map(|e| e.raw.as_str()).collect(), p.rejects.iter().map(|r| r.raw.as_str()).collect())
    }

    #[test]
    fn invalid_utf8_element_is_set_aside_and_the_rest_of_the_page_read() {
        let mut body = format!(r#"{{"data":[{{"id":"a",{AT},"x":"ok"}},{{"id":"b","x":"bad "#).into_bytes();
        body.extend_from_slice(b"\xff\xfe");
        body.extend_from_slice(
            format!(
                r#""}},{{"id":"c",{AT},"x":"bad \q escape"}}, {{"id":"d",{AT}}}],"pagination":{{"next_page":null}}}}"#
            )
            .as_bytes(),
        );
        let p = Page::parse(1, &body).unwrap();
        let a = format!(r#"{{"id":"a",{AT},"x":"ok"}}"#);
        let (c, d) = (format!(r#"{{"id":"c",{AT},"x":"bad \q escape"}}"#), format!(r#"{{"id":"d",{AT}}}"#));
        assert_eq!(raws(&p), (vec![a.as_str(), d.as_str()], vec![r#"{"id":"b","x":"bad \xFF\xFE"}"#, c.as_str()]));
        assert!(p.rejects[0].reason.contains("invalid UTF-8 at byte 19"), "{}", p.rejects[0].reason);
        assert!(p.rejects[1].reason.contains("unreadable event object"), "{}", p.rejects[1].reason);
        assert_eq!(p.len(), 4);
        assert_eq!(p.next_page(), None);
    }

    #[test]
    fn a_page_of_only_unreadable_elements_is_not_empty() {
        let p = Page::parse(1, b"{\"data\":[\"\xff\"]}").unwrap();
        assert!(p.events.is_empty());
        assert_eq!(p.rejects.len(), 1);
        assert_eq!(p.next_page(), Some(2), "not an empty page: the walk goes on");
    }

    #[test]
    fn structure_is_read_whatever_the_nesting_and_spacing() {
        let event = format!("{{ \"id\" :\"a\",\n {AT}, \"s\":\"q\\\"}}]\"}}");
        let body = format!(
            " {{\"meta\" : {{\"pagination\": {{\"next-page\": \"2\"}}}}, \"other\": [1, {{\"a\": [true, null, -1.5e3]}}],\n \"data\" : [ {event} , [[[]]] , \"x\",{{\"id\":\"b\"}} ] }} "
        );
        let p = Page::parse(1, body.as_bytes()).unwrap();
        assert_eq!(raws(&p), (vec![event.as_str()], vec!["[[[]]]", r#""x""#, r#"{"id":"b"}"#]));
        assert_eq!(p.next_page(), Some(2));
    }

    /// The events' texts, and the rejects' texts and reasons.
    type Read = (Vec<String>, Vec<(String, String)>);

    /// An element the scan finds, read on its own: what every element was before each
    /// was read as an event where it starts.
    fn read_on_its_own(body: &[u8]) -> Result<Read, NotAPage> {
        let elements = scan::top_level(body, &mut |_| None)?.data.unwrap_or_default();
        let (mut events, mut rejects) = (Vec::new(), Vec::new());
        for element in elements {
            match element_text(element).and_then(AuditEvent::parse_owned) {
                Ok(e) => events.push(e.raw),
                Err(r) => rejects.push((r.raw, r.reason)),
            }
        }
        Ok((events, rejects))
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// Reading each element as an event where it starts keeps every element's text
        /// and reading as the scan and a reading of each element on its own did, and
        /// tells a broken body the same.
        #[test]
        fn elements_read_where_they_start_are_those_read_on_their_own(
            elements in proptest::collection::vec(
                prop_oneof![
                    4 => ("[a-z0-9]{1,8}", "[ \n]{0,2}", prop_oneof![
                        Just(String::new()),
                        "\\PC{0,10}".prop_map(|s| format!(",\"s\":{}", serde_json::to_string(&s).unwrap())),
                        Just(r#","auth":{"accessor_id":"user-1","description":"d"},"auth":1"#.to_owned()),
                        Just(r#","x":"bad \q""#.to_owned()),
                        Just(r#","x":[{"y":null}],"resource":{"meta":{"team":{"id":"team-1","name":"t"}}}"#.to_owned()),
                        Just(format!(r#","deep":{}1{}"#, "[".repeat(200), "]".repeat(200))),
                    ])
                        .prop_map(|(id, space, rest)| format!("{{{space}\"id\":\"{id}\",{space}{AT}{rest}{space}}}").into_bytes()),
                    1 => Just(br#"{"id":"x"}"#.to_vec()),
                    1 => Just(b"{\"id\":\"u\",\"timestamp\":\"2024-01-01T00:00:00Z\",\"s\":\"\xff\"}".to_vec()),
                    1 => Just(b"{\"id\":\"u\",\"x\":\"\xc3\"}".to_vec()),
                    1 => Just(br#""text""#.to_vec()),
                    1 => Just(b"[1,{}]".to_vec()),
                    1 => Just(b"-1.5e3".to_vec()),
                    1 => Just(br#"{"id":"cut"#.to_vec()),
                ],
                0..6,
            ),
            between in "[ ,\n]{1,2}",
        ) {
            let mut body = b"{\"data\":[".to_vec();
            for (i, element) in elements.iter().enumerate() {
                if i > 0 {
                    body.extend_from_slice(between.as_bytes());
                }
                body.extend_from_slice(element);
            }
            body.extend_from_slice(b"]}");
            match (Page::parse(1, &body), read_on_its_own(&body)) {
                (Ok(p), Ok((events, rejects))) => {
                    prop_assert_eq!(p.events.iter().map(|e| e.raw.clone()).collect::<Vec<_>>(), events);
                    prop_assert_eq!(p.rejects.iter().map(|r| (r.raw.clone(), r.reason.clone())).collect::<Vec<_>>(), rejects);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "{:?} against {:?}", a.map(|p| p.len()), b.map(|_| ())),
            }
        }
    }

    #[test]
    fn cut_short_or_foreign_bodies_are_not_pages() {
        for body in [
            r#"{"data":[{"id":"a"},{"id""#,
            r#"{"data":[{"id":"a"},{"id":"b"}"#,
            r#"{"data":[{"id":"a","timestamp":"2024-01-01T00:00:00Z"}"#,
            r#"{"data":[{"id":"a","timestamp":"2024-01-01T00:00:00Z"} {"id":"b"}]}"#,
            r#"{"data":[{"id":"a","timestamp":"2024-01-01T00:00:00Z"}]} trailing"#,
            r#"{"data":[{"id":"a"} {"id":"b"}]}"#,
            r#"{"data":[{"id":"a"}]} trailing"#,
            r#"{"data":[{"id":"a"}],"data":[]}"#,
            r#"{"data":{"id":"a"}}"#,
            "<html>502</html>",
            r#"{"errors":[]}"#,
            "",
        ] {
            assert!(Page::parse(1, body.as_bytes()).is_err(), "{body}");
        }
    }
}
