use super::*;
use tfaudit_store::AlertRecord;

fn alert() -> AlertRecord {
    let event = serde_json::json!({
        "id": "ae66e491-db59-457c-8445-9c908ee726ae",
        "version": "0",
        "type": "Resource",
        "timestamp": "2026-11-25T03:12:44.000Z",
        "auth": {"accessor_id": "user-MaPuLxAXvtq2PWTH", "description": "<!channel> & <script>", "type": "Impersonated",
                 "impersonator_id": "user-Support", "organization_id": "org-AGLwRmx1snv34Yts"},
        "request": {"id": "4df584d4-7e2a-01e6-6cc0-4adbefa020e6"},
        "resource": {"id": "polchk-abc", "type": "policy_check", "action": "override",
                     "meta": {"workspace": {"id": "ws-1", "name": "prod-net"}, "run": {"id": "run-9"}}}
    });
    AlertRecord {
        id: 42,
        alert: tfaudit_store::Alert {
        key: "policy-override:ae66e491-db59-457c-8445-9c908ee726ae".into(),
        rule: "policy-override".into(),
        severity: "high".into(),
        group: None,
        title: "[HIGH] A policy check or run task was overridden".into(),
        text: "<!channel> & <script> (impersonated by user-Support) override policy_check polchk-abc in acme at 2026-11-25T03:12:44Z.\nWorkspace: prod-net\nhttps://app.terraform.io/app/acme/workspaces/prod-net/runs/run-9\nRule: policy-override (high)".into(),
        source: "acme".into(),
        event_seq: 7,
        event_id: "ae66e491-db59-457c-8445-9c908ee726ae".into(),
        event_time: "2026-11-25T03:12:44Z".parse().unwrap(),
        count: 1,
        window_start: None,
        window_end: None,
        link: Some("https://app.terraform.io/app/acme/workspaces/prod-net/runs/run-9".into()),
        event: event.to_string(),
        },
        raised_at: "2026-11-25T03:13:01Z".parse().unwrap(),
        deliveries: Vec::new(),
    }
}

/// The catalogue's names, one of them hostile.
fn names() -> Names {
    Names::from([
        ("user-Support".to_owned(), "<!here> support".to_owned()),
        ("polchk-abc".to_owned(), "sentinel".to_owned()),
    ])
}

#[test]
fn slack_block_kit() {
    let p = slack_payload(&alert(), &names());
    insta::assert_json_snapshot!(p);
    let text = p.to_string();
    assert!(!text.contains("<!channel>") && text.contains("&lt;!channel&gt;"), "mentions are escaped");
    assert!(
        !text.contains("<!here>") && text.contains("&lt;!here&gt; support (user-Support)"),
        "names are escaped too"
    );
    assert!(text.contains("policy_check.override sentinel (polchk-abc)"), "the resource is named: {text}");
}

#[test]
fn slack_without_names_shows_the_ids() {
    let text = slack_payload(&alert(), &Names::new()).to_string();
    assert!(text.contains("(impersonated by user-Support)") && text.contains("policy_check.override polchk-abc"));
}

#[test]
fn pagerduty_events_v2() {
    let p = pagerduty_payload(&alert(), "R0UTINGKEY", &names());
    assert_eq!(p["payload"]["custom_details"]["names"]["polchk-abc"], "sentinel");
    insta::assert_json_snapshot!(p);
}

#[test]
fn webhook_json() {
    insta::assert_json_snapshot!(webhook_body(&alert()));
}

#[test]
fn email_text() {
    insta::assert_snapshot!(email_body(&alert(), &names()));
}

#[test]
fn idempotency_keys_are_stable_and_short() {
    let a = alert();
    assert_eq!(idempotency_key(&a), idempotency_key(&a));
    assert_eq!(idempotency_key(&a).len(), "tfaudit-".len() + 32);
    let mut b = a.clone();
    b.alert.key.push('x');
    assert_ne!(idempotency_key(&a), idempotency_key(&b));
}

#[test]
fn webhook_signature_is_hmac_sha256_of_timestamp_dot_body() {
    // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
    assert_eq!(
        webhook_signature("s3cret", 1_700_000_000, br#"{"a":1}"#),
        "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
    );
}

#[test]
fn receiver_statuses_follow_the_readme_table() {
    use reqwest::StatusCode;
    let judged = |code: u16| judge(StatusCode::from_u16(code).unwrap(), format!("answered {code}"), None);
    for code in [200, 202, 204] {
        assert_eq!(judged(code), Sent::Delivered, "{code}");
    }
    for code in [408, 425, 429, 500, 502, 503, 504] {
        assert!(matches!(judged(code), Sent::Retry { .. }), "{code}");
    }
    for code in [301, 302, 307, 308, 401, 403, 404, 405, 407, 410] {
        assert!(matches!(judged(code), Sent::Misconfigured { .. }), "{code}");
    }
    for code in [400, 409, 413, 415, 422] {
        assert!(matches!(judged(code), Sent::Permanent { .. }), "{code}");
    }
    let Sent::Misconfigured { error } = judged(302) else { unreachable!() };
    assert!(error.contains("not followed"), "{error}");
}

#[test]
fn retry_after_is_read_in_seconds_or_as_a_date_and_capped() {
    let with = |v: &str| {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
        retry_after(&h)
    };
    assert_eq!(with("120"), Some(Duration::from_secs(120)));
    assert_eq!(with("999999"), Some(Duration::from_secs(3600)));
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(90);
    let date = jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&soon).unwrap();
    let wait = with(&date).unwrap();
    assert!(wait > Duration::from_secs(80) && wait <= Duration::from_secs(90), "{wait:?} from {date}");
    assert_eq!(with("soon"), None);
}

#[test]
fn email_shows_a_deeply_nested_event_as_sent_and_bounded() {
    let mut a = alert();
    let depth = 10_000;
    a.alert.event = format!(
        r#"{{"id":"e1","resource":{{"type":"run","action":"apply","meta":{}1{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let body = email_body(&a, &Names::new());
    // serde gives up past 128 levels and would print `null`; the event is shown, and
    // its indentation stays within a small multiple of its size.
    assert!(body.contains(&format!("{}1{}", "[".repeat(100), "]".repeat(100))), "the deep part is shown");
    assert!(body.len() < 4 * a.event.len() + 300_000, "{} bytes", body.len());
}
