use super::*;

fn parse(text: &str) -> Result<RuleSet, RuleError> {
    RuleSet::parse("r.toml", text, &Origin::File("r.toml".into()), &jiff::tz::TimeZone::UTC)
}

#[test]
fn the_built_in_pack_parses() {
    let pack = crate::pack::builtin(&jiff::tz::TimeZone::UTC).unwrap();
    assert!(pack.rules.len() >= 15);
    assert!(pack.rules.iter().all(|r| r.origin == Origin::Builtin && r.enabled));
}

#[test]
fn a_full_rule() {
    let set = parse(
        r#"
[[rule]]
name = "night-admin"
severity = "medium"
description = "x"
destinations = ["pagerduty"]
match = { "resource.type" = ["organization", "saml_configuration"], "auth.accessor_id" = "user-*", "auth.impersonator_id" = false }
when = { any = [ { field = "meta.team.name", equals = "owners" }, { not = { field = "auth.type", regex = "^Cli" } } ] }
time = { outside = "Mon-Fri 08:00-19:00", timezone = "Europe/Berlin" }
threshold = { count = 3, within = "10m" }
group_by = "workspace"
quiet = "1h"
title = "{{ rule.name }} by {{ event.actor }}"
"#,
    )
    .unwrap();
    let r = &set.rules[0];
    assert_eq!(r.severity, Severity::Medium);
    assert_eq!(r.threshold, Some(Threshold { count: 3, within: Duration::from_secs(600) }));
    assert_eq!(r.group_by, Some(Field::Meta(vec!["workspace".into(), "name".into()])));
    assert_eq!(r.quiet, Some(Duration::from_secs(3600)));
    assert!(r.needs_meta);
    let w = r.time.as_ref().unwrap();
    assert!(!w.inside);
    assert_eq!(w.days, [true, true, true, true, true, false, false]);
    // 2026-11-25 is a Wednesday; 07:30 UTC is 08:30 in Berlin: within business hours.
    assert!(!w.applies("2026-11-25T07:30:00Z".parse().unwrap()));
    assert!(w.applies("2026-11-25T06:30:00Z".parse().unwrap()));
    assert!(w.applies("2026-11-28T12:00:00Z".parse().unwrap()), "Saturday");
}

#[test]
fn overnight_ranges_and_day_lists() {
    let (days, s, e) = parse_hours("Sat,Sun 22:00-06:00").unwrap();
    assert_eq!(days, [false, false, false, false, false, true, true]);
    assert_eq!((s, e), (22 * 60, 6 * 60));
    let (days, s, e) = parse_hours("Fri-Mon").unwrap();
    assert_eq!(days, [true, false, false, false, true, true, true]);
    assert_eq!((s, e), (0, 24 * 60));
    assert!(parse_hours("25:00-26:00").is_err());
    assert!(parse_hours("Funday").is_err());
}

#[test]
fn mistakes_name_their_line() {
    let cases = [
        ("[[rule]]\nname = \"a\"\nseverity = \"urgent\"\ndescription = \"x\"\n", 3, "not a severity"),
        (
            "[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\nmatch = { \"resource.kind\" = \"x\" }\n",
            5,
            "unknown field",
        ),
        (
            "[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\nwhen = { field = \"auth.type\", regex = \"(\" }\n",
            5,
            "does not compile",
        ),
        (
            "[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\nwhen = { field = \"auth.type\" }\n",
            5,
            "exactly one of",
        ),
        (
            "[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\nthreshold = { count = 0, within = \"1m\" }\n",
            5,
            "at least 1",
        ),
        (
            "[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\ntime = { inside = \"9 to 5\" }\n",
            5,
            "not a time range",
        ),
        (
            "[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\ntime = { inside = \"09:00-17:00\", timezone = \"Mars/Olympus\" }\n",
            5,
            "unknown time zone",
        ),
        ("[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\nquiet = \"soon\"\n", 5, "not a duration"),
        ("[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\ncolour = \"red\"\n", 5, "colour"),
        ("[[rule]]\nname = \"a b\"\nseverity = \"low\"\ndescription = \"x\"\n", 2, "must be letters"),
        ("[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\ntitle = \"{{ oops\"\n", 5, "template"),
        (
            "[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"x\"\n[[rule]]\nname = \"a\"\nseverity = \"low\"\ndescription = \"y\"\n",
            6,
            "twice",
        ),
    ];
    for (text, line, needle) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text}\n{e}");
        assert!(e.message.contains(needle), "{e}");
        assert!(e.to_string().starts_with(&format!("r.toml:{line}: ")));
    }
}

#[test]
fn overlay_replaces_by_name_and_disable_reports_unknown_names() {
    let mut pack = crate::pack::builtin(&jiff::tz::TimeZone::UTC).unwrap();
    let n = pack.rules.len();
    pack.overlay(
        parse("[[rule]]\nname = \"token-created\"\nseverity = \"critical\"\ndescription = \"mine\"\n").unwrap(),
    );
    assert_eq!(pack.rules.len(), n);
    let r = pack.rules.iter().find(|r| r.name == "token-created").unwrap();
    assert_eq!((r.severity, r.description.as_str()), (Severity::Critical, "mine"));
    assert_eq!(pack.disable(&["night-activity".into(), "nope".into()]), ["nope"]);
    assert_eq!(pack.enabled().count(), n - 1);
}
