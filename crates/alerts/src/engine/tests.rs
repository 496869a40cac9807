use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
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
    assert!(
        a.text.contains("name-user-a overrode a failed policy check res-e1 in workspace prod net in acme at"),
        "{}",
        a.text
    );
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

/// The threshold rule stated plainly, to test the engine against. Per group, in the
/// order events arrive: an event more than [`LATE_MS`] behind the newest event so far,
/// or inside a window already alerted on, is not counted. Otherwise it is counted, and
/// if some window `[s, s + within]` holding it (with `s` a counted time) now holds
/// `count` counted events, the earliest such window raises one alert: its start, its
/// last event's time and how many events it holds; they are not counted again.
#[derive(Default)]
struct Model {
    latest: Option<i64>,
    counted: HashMap<String, Vec<i64>>,
    alerted: HashMap<String, Vec<(i64, i64)>>,
}

impl Model {
    fn feed(&mut self, t: i64, group: &str, within: i64, count: usize) -> Option<(i64, i64, u64)> {
        let too_late = self.latest.is_some_and(|latest| t < latest - LATE_MS);
        self.latest = Some(self.latest.map_or(t, |l| l.max(t)));
        let alerted = self.alerted.entry(group.to_owned()).or_default();
        if too_late || alerted.iter().any(|(s, e)| *s <= t && t <= *e) {
            return None;
        }
        let counted = self.counted.entry(group.to_owned()).or_default();
        counted.push(t);
        let mut starts: Vec<i64> = counted.iter().copied().filter(|s| *s >= t - within && *s <= t).collect();
        starts.sort_unstable();
        for s in starts {
            let inside: Vec<i64> = counted.iter().copied().filter(|x| *x >= s && *x <= s + within).collect();
            if inside.len() >= count {
                counted.retain(|x| *x < s || *x > s + within);
                alerted.push((s, s + within));
                return Some((s, *inside.iter().max().unwrap(), inside.len() as u64));
            }
        }
        None
    }
}

#[test]
fn a_late_burst_before_an_alerted_window_still_alerts() {
    let set = rules(
        "[[rule]]\nname = \"t\"\nseverity = \"low\"\ndescription = \"d\"\nthreshold = { count = 2, within = \"10s\" }\n",
    );
    let mut engine = Engine::new(&set, EngineState::default(), Presentation::default());
    let mut fire =
        |seq: i64, s: i64| engine.evaluate(&event(seq, &format!("e{seq}"), &at(s), "a", "run", "apply", "null")).len();
    assert_eq!((fire(1, 100), fire(2, 105)), (0, 1), "window [100, 110]");
    assert_eq!(fire(3, 108), 0, "inside the window alerted on");
    // Arriving late, a burst of its own, earlier than that window: its own alert.
    assert_eq!((fire(4, 50), fire(5, 55)), (0, 1));
}

#[test]
fn an_event_later_than_the_allowance_is_not_counted() {
    let set = rules(
        "[[rule]]\nname = \"t\"\nseverity = \"low\"\ndescription = \"d\"\nthreshold = { count = 2, within = \"10m\" }\n",
    );
    let mut engine = Engine::new(&set, EngineState::default(), Presentation::default());
    let mut fire =
        |seq: i64, s: i64| engine.evaluate(&event(seq, &format!("e{seq}"), &at(s), "a", "run", "apply", "null")).len();
    assert_eq!(fire(1, 10_000), 0);
    // Two events 1 h 0 min 1 s behind the newest: a full window, but too late to count.
    assert_eq!((fire(2, 6_399), fire(3, 6_399)), (0, 0));
    // Exactly an hour behind still counts.
    assert_eq!((fire(4, 6_400), fire(5, 6_400)), (0, 1));
}

#[test]
fn a_glob_over_a_five_megabyte_field_is_matched_exactly() {
    let pattern = format!("*{}B", "A".repeat(2_000));
    let set = rules(&format!(
        "[[rule]]\nname = \"g\"\nseverity = \"low\"\ndescription = \"d\"\nmatch = {{ \"meta.note\" = \"{pattern}\" }}\n"
    ));
    let mut engine = Engine::new(&set, EngineState::default(), Presentation::default());
    let big = "A".repeat(5_000_000);
    let meta = |note: &str| format!(r#"{{"note":"{note}"}}"#);
    assert_eq!(engine.evaluate(&event(1, "1", &at(0), "a", "var", "update", &meta(&big))).len(), 0);
    assert_eq!(engine.evaluate(&event(2, "2", &at(1), "a", "var", "update", &meta(&format!("{big}B")))).len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The engine raises exactly the model's alerts — the same windows, groups, counts
    /// and events — whatever order events arrive in, with events beyond the late
    /// allowance, and whenever its state is compacted or saved and loaded.
    #[test]
    fn threshold_alerts_are_exactly_the_models(
        events in proptest::collection::vec((0i64..3 * 3_600, 0usize..2), 0..80),
        count in 1usize..6,
        within in 1i64..900,
        shuffle_seed in any::<u64>(),
        compact_every in 1usize..20,
    ) {
        let text = format!("[[rule]]\nname = \"t\"\nseverity = \"low\"\ndescription = \"d\"\nthreshold = {{ count = {count}, within = \"{within}s\" }}\ngroup_by = \"actor\"\n");
        let set = rules(&text);
        let mut engine = Engine::new(&set, EngineState::default(), Presentation::default());
        let mut order: Vec<usize> = (0..events.len()).collect();
        // A deterministic shuffle: late and out-of-order arrivals, some beyond the allowance.
        let mut x = shuffle_seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut model = Model::default();
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for (n, &i) in order.iter().enumerate() {
            let (second, group) = events[i];
            let actor = ["alice", "bob"][group];
            for a in engine.evaluate(&event(i as i64, &format!("e{i}"), &at(second), actor, "run", "apply", "null")) {
                got.push((
                    i,
                    a.group.clone().unwrap(),
                    a.window_start.unwrap().as_millisecond(),
                    a.window_end.unwrap().as_millisecond(),
                    a.count,
                ));
            }
            if let Some((start, end, c)) = model.feed((1_700_000_000 + second) * 1000, actor, within * 1000, count) {
                want.push((i, actor.to_owned(), start, end, c));
            }
            if n % compact_every == 0 {
                engine.compact();
                let saved = serde_json::to_string(&engine.state).unwrap();
                engine = Engine::new(&set, serde_json::from_str(&saved).unwrap(), Presentation::default());
            }
        }
        prop_assert_eq!(got, want);
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

/// The built-in pack with only `name` on.
fn builtin_only(name: &str) -> Engine {
    let mut pack = crate::pack::builtin(&jiff::tz::TimeZone::UTC).unwrap();
    let others: Vec<String> = pack.rules.iter().map(|r| r.name.clone()).filter(|n| n != name).collect();
    assert!(pack.disable(&others).is_empty());
    Engine::new(&pack, EngineState::default(), Presentation::default())
}

#[test]
fn owner_added_fires_only_for_the_team_named_exactly_owners() {
    let mut engine = builtin_only("owner-added");
    let mut fire = |seq: i64, action: &str, team: &str| {
        let meta = format!(r#"{{"team":{{"id":"team-1","name":"{team}"}}}}"#);
        engine.evaluate(&event(seq, &format!("e{seq}"), &at(seq), "user-a", "team", action, &meta)).len()
    };
    assert_eq!(fire(1, "add_member", "owners"), 1);
    assert_eq!(fire(2, "add_member", "Owners"), 0, "meta.team.name is compared exactly");
    assert_eq!(fire(3, "add_member", "owners-2"), 0);
    assert_eq!(fire(4, "remove_member", "owners"), 0);
}

#[test]
fn night_activity_is_any_action_but_a_read_from_midnight_to_five() {
    let mut engine = builtin_only("night-activity");
    // 1_700_000_000 is 2023-11-14T22:13:20Z; midnight follows 6,400 s later.
    let midnight = 6_400;
    let mut fire = |seq: i64, second: i64, actor: &str, rtype: &str, action: &str| {
        engine.evaluate(&event(seq, &format!("e{seq}"), &at(second), actor, rtype, action, "null")).len()
    };
    assert_eq!(fire(1, midnight - 1, "a", "var", "update"), 0, "23:59:59");
    assert_eq!(fire(2, midnight, "a", "workspace", "add_team"), 1, "00:00, any change");
    assert_eq!(fire(3, midnight + 60, "a", "var", "update"), 0, "quiet for an hour per actor");
    assert_eq!(fire(4, midnight + 60, "b", "var", "show"), 0, "a read");
    assert_eq!(fire(5, midnight + 120, "b", "var", "index"), 0, "a read");
    assert_eq!(fire(6, midnight + 180, "b", "ai_change_summary", "generate"), 1, "an action never seen before");
    assert_eq!(fire(7, midnight + 5 * 3600 - 1, "c", "run", "apply"), 1, "04:59:59");
    assert_eq!(fire(8, midnight + 5 * 3600, "d", "run", "apply"), 0, "05:00 is day");
}

#[test]
fn delete_burst_fires_on_the_twentieth_deletion_by_one_actor_within_ten_minutes() {
    let mut engine = builtin_only("delete-burst");
    let actions = ["destroy", "force_cancel", "discard"];
    let mut fired = Vec::new();
    // 19 by alice, 19 by bob, interleaved, all within ten minutes: nobody has 20.
    for i in 0..19 {
        for (n, actor) in ["alice", "bob"].into_iter().enumerate() {
            let seq = i * 2 + n as i64;
            let e = event(seq, &format!("e{seq}"), &at(i * 30), actor, "var", actions[i as usize % 3], "null");
            fired.extend(engine.evaluate(&e));
        }
    }
    assert!(fired.is_empty(), "{fired:#?}");
    // Alice's 20th, 10 minutes after her first: the window is inclusive.
    fired.extend(engine.evaluate(&event(100, "e100", &at(600), "alice", "workspace", "destroy", "null")));
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].group.as_deref(), fired[0].count), (Some("alice"), 20));
    assert_eq!(fired[0].window_start, Some(Timestamp::from_second(1_700_000_000).unwrap()));
    // Bob's 20th, 10 minutes and 1 s after his first: his first has slid out.
    fired.extend(engine.evaluate(&event(101, "e101", &at(601), "bob", "workspace", "destroy", "null")));
    assert_eq!(fired.len(), 1);
    // A read or an update is no deletion.
    fired.extend(engine.evaluate(&event(102, "e102", &at(602), "bob", "workspace", "update", "null")));
    assert_eq!(fired.len(), 1);
}
