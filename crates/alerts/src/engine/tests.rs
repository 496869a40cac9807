use super::*;
use proptest::prelude::*;
use tfaudit_api::AuditEvent;

use crate::rules::Origin;

fn rules(text: &str) -> RuleSet {
    RuleSet::parse("t.toml", text, &Origin::File("t.toml".into()), &jiff::tz::TimeZone::UTC).unwrap()
}

fn event(seq: i64, id: &str, t: &str, actor: &str, rtype: &str, action: &str, meta: &str) -> StoredEvent {
    let raw = format!(
        r#"{{"id":"{id}","version":"0","type":"Resource","timestamp":"{t}","auth":{{"accessor_id":"{actor}","description":"name-{actor}","type":"Client","impersonator_id":null,"organization_id":"org-1"}},"request":{{"id":"r"}},"resource":{{"id":"res-{id}","type":"{rtype}","action":"{action}","meta":{meta}}}}}"#
    );
    let event = AuditEvent::parse(&serde_json::value::RawValue::from_string(raw).unwrap()).unwrap();
    StoredEvent { seq, source: "acme".into(), ingested_at: event.timestamp, event }
}

fn at(second: i64) -> String {
    Timestamp::from_second(1_700_000_000 + second).unwrap().to_string()
}

#[test]
fn a_matching_event_raises_one_alert_with_its_details() {
    let mut links = Presentation::default();
    links.bases.insert("acme".into(), "https://app.terraform.io/app/acme".into());
    let mut engine =
        Engine::new(&crate::pack::builtin(&jiff::tz::TimeZone::UTC).unwrap(), EngineState::default(), links);
    // Seen before, so only the rule under test fires.
    let warm = event(1, "w", &at(0), "user-a", "authentication_token", "create", "null");
    engine.evaluate(&warm);
    let e = event(
        2,
        "e1",
        &at(10),
        "user-a",
        "policy_check",
        "override",
        r#"{"workspace":{"id":"ws-1","name":"prod net"},"run":{"id":"run-9"}}"#,
    );
    engine.state.seen.add_kind("policy_check", "override");
    let alerts = engine.evaluate(&e);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.rule, "policy-override");
    assert_eq!(a.key, "policy-override:e1");
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.link.as_deref(), Some("https://app.terraform.io/app/acme/workspaces/prod%20net/runs/run-9"));
    assert_eq!(a.title, "[HIGH] A policy check or run task was overridden");
    assert!(a.text.contains("name-user-a override policy_check res-e1 in acme at"), "{}", a.text);
    assert!(a.text.contains("Workspace: prod net"), "{}", a.text);
    assert_eq!(a.event["id"], "e1");
}

#[test]
fn thresholds_fire_once_per_window_per_group() {
    let set = rules(
        "[[rule]]\nname = \"burst\"\nseverity = \"high\"\ndescription = \"d\"\nmatch = { \"resource.action\" = \"destroy\" }\nthreshold = { count = 20, within = \"10m\" }\ngroup_by = \"actor\"\n",
    );
    let mut engine = Engine::new(&set, EngineState::default(), Presentation::default());
    let mut fired = Vec::new();
    // 25 destroys by alice in 5 minutes, 19 by bob: alice fires once, bob never.
    for i in 0..25 {
        fired.extend(engine.evaluate(&event(
            i,
            &format!("a{i}"),
            &at(i * 12),
            "alice",
            "workspace",
            "destroy",
            "null",
        )));
    }
    for i in 0..19 {
        fired.extend(engine.evaluate(&event(
            100 + i,
            &format!("b{i}"),
            &at(i * 12),
            "bob",
            "workspace",
            "destroy",
            "null",
        )));
    }
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].group.as_deref(), Some("alice"));
    assert_eq!(fired[0].count, 20);
    assert!(fired[0].text.contains("20 matching events"), "{}", fired[0].text);
    // Well after the window: counting starts again.
    for i in 0..20 {
        fired.extend(engine.evaluate(&event(
            200 + i,
            &format!("c{i}"),
            &at(3600 + i),
            "alice",
            "workspace",
            "destroy",
            "null",
        )));
    }
    assert_eq!(fired.len(), 2);
}

#[test]
fn quiet_periods_suppress_repeats_in_event_time() {
    let set = rules(
        "[[rule]]\nname = \"imp\"\nseverity = \"high\"\ndescription = \"d\"\nmatch = { \"resource.type\" = \"run\" }\ngroup_by = \"actor\"\nquiet = \"1h\"\n",
    );
    let mut engine = Engine::new(&set, EngineState::default(), Presentation::default());
    let n = |engine: &mut Engine, seq, s, actor| {
        engine.evaluate(&event(seq, &format!("e{seq}"), &at(s), actor, "run", "apply", "null")).len()
    };
    assert_eq!(n(&mut engine, 1, 0, "a"), 1);
    assert_eq!(n(&mut engine, 2, 60, "a"), 0);
    assert_eq!(n(&mut engine, 3, 60, "b"), 1, "another group");
    assert_eq!(n(&mut engine, 4, 3601, "a"), 1);
}

#[test]
fn first_seen_values_fire_once_and_survive_a_restart() {
    let set = rules("[[rule]]\nname = \"new\"\nseverity = \"low\"\ndescription = \"d\"\nfirst_seen = \"accessor\"\n");
    let mut engine = Engine::new(&set, EngineState::default(), Presentation::default());
    assert_eq!(engine.evaluate(&event(1, "1", &at(0), "user-a", "run", "apply", "null")).len(), 1);
    assert_eq!(engine.evaluate(&event(2, "2", &at(1), "user-a", "run", "apply", "null")).len(), 0);
    let saved = serde_json::to_string(&engine.state).unwrap();
    let mut restarted = Engine::new(&set, serde_json::from_str(&saved).unwrap(), Presentation::default());
    assert_eq!(restarted.evaluate(&event(3, "3", &at(2), "user-a", "run", "apply", "null")).len(), 0);
    let alerts = restarted.evaluate(&event(4, "4", &at(3), "user-b", "run", "apply", "null"));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].key, "new:user-b");
}

#[test]
fn meta_paths_regex_and_not() {
    let set = rules(
        r#"[[rule]]
name = "owners"
severity = "critical"
description = "d"
when = { all = [ { field = "meta.team.name", regex = "^own" }, { not = { field = "auth.accessor_id", glob = "team-*" } }, { field = "meta.team.missing", exists = false } ] }
"#,
    );
    let mut engine = Engine::new(&set, EngineState::default(), Presentation::default());
    assert_eq!(
        engine.evaluate(&event(1, "1", &at(0), "user-a", "team", "add_member", r#"{"team":{"name":"owners"}}"#)).len(),
        1
    );
    assert_eq!(
        engine.evaluate(&event(2, "2", &at(0), "team-x", "team", "add_member", r#"{"team":{"name":"owners"}}"#)).len(),
        0
    );
    assert_eq!(
        engine.evaluate(&event(3, "3", &at(0), "user-a", "team", "add_member", r#"{"team":{"name":"devs"}}"#)).len(),
        0
    );
    assert_eq!(engine.evaluate(&event(4, "4", &at(0), "user-a", "team", "add_member", "null")).len(), 0);
}

#[test]
fn templates_render_hostile_values_as_plain_text() {
    let set = rules(
        "[[rule]]\nname = \"r\"\nseverity = \"info\"\ndescription = \"d\"\ntext = \"{{ event.actor }} did {{ event.action }}{{ nothing.here }}\"\n",
    );
    let mut engine = Engine::new(&set, EngineState::default(), Presentation::default());
    let alerts = engine.evaluate(&event(1, "1", &at(0), "<script>x</script>", "run", "apply", "null"));
    assert_eq!(alerts[0].text, "name-<script>x</script> did apply");
}

/// A naive statement of the threshold rule, to test the engine against: an alert is
/// due whenever some window of length `within` holds `count` events not already
/// alerted on.
fn exists_full_window(times: &[i64], within: i64, count: usize) -> bool {
    let mut t = times.to_vec();
    t.sort_unstable();
    (0..t.len()).any(|i| t.iter().filter(|x| **x >= t[i] && **x <= t[i] + within).count() >= count)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Sound and complete: no alert without `count` events in some window, and an
    /// alert whenever there is such a window — whatever order events arrive in.
    #[test]
    fn threshold_alerts_exactly_when_a_window_fills(
        seconds in proptest::collection::vec(0i64..3_000, 0..80),
        count in 1usize..6,
        within in 1i64..600,
        shuffle_seed in any::<u64>(),
    ) {
        let text = format!("[[rule]]\nname = \"t\"\nseverity = \"low\"\ndescription = \"d\"\nthreshold = {{ count = {count}, within = \"{within}s\" }}\n");
        let mut engine = Engine::new(&rules(&text), EngineState::default(), Presentation::default());
        let mut order: Vec<usize> = (0..seconds.len()).collect();
        // A deterministic shuffle: late and out-of-order arrivals.
        let mut x = shuffle_seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut alerts = Vec::new();
        for &i in &order {
            alerts.extend(engine.evaluate(&event(i as i64, &format!("e{i}"), &at(seconds[i]), "a", "run", "apply", "null")));
        }
        let within_ms = within * 1000;
        let times_ms: Vec<i64> = seconds.iter().map(|s| (1_700_000_000 + s) * 1000).collect();
        prop_assert_eq!(!alerts.is_empty(), exists_full_window(&times_ms, within_ms, count));
        for a in &alerts {
            let (s, e) = (a.window_start.unwrap().as_millisecond(), a.window_end.unwrap().as_millisecond());
            prop_assert!(e - s <= within_ms);
            prop_assert!(a.count as usize >= count);
            let in_window = times_ms.iter().filter(|t| **t >= s && **t <= e).count();
            prop_assert!(in_window >= count);
        }
        // Keys are unique: one alert per window.
        let keys: std::collections::HashSet<_> = alerts.iter().map(|a| a.key.clone()).collect();
        prop_assert_eq!(keys.len(), alerts.len());
    }

    /// In time order, a burst produces one alert per window, not one per event.
    #[test]
    fn an_ordered_burst_fires_once_per_window(n in 1usize..200, count in 2u32..30) {
        let text = format!("[[rule]]\nname = \"t\"\nseverity = \"low\"\ndescription = \"d\"\nthreshold = {{ count = {count}, within = \"10m\" }}\n");
        let mut engine = Engine::new(&rules(&text), EngineState::default(), Presentation::default());
        let mut alerts = 0;
        // n events one second apart: all inside one 10-minute window.
        for i in 0..n {
            alerts += engine.evaluate(&event(i as i64, &format!("e{i}"), &at(i as i64), "a", "run", "apply", "null")).len();
        }
        prop_assert_eq!(alerts, usize::from(n >= count as usize));
    }
}
