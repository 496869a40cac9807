//! The catalogue: names from events and listings, with history, renames and gone ids.

use tfaudit_model::{NameKind, Sighting};
use tfaudit_store::Listing;

use crate::{Fresh, at, ev, source};

fn named(id: &str, kind: NameKind, name: &str) -> Sighting {
    Sighting::new(id, kind, name, None).expect("a usable sighting")
}

/// Names that events give are kept with their event times; a listing adds names,
/// marks renames and ids no longer listed, and the newest name is the current one.
pub fn names_have_history_renames_and_gone_ids(fresh: Fresh<'_>) {
    let a = fresh();
    let src = source(&*a, "acme");
    src.page(&[
        ev("e1", "2024-01-01T00:00:00Z").actor("user-1", "ann"),
        ev("e2", "2024-01-03T00:00:00Z").actor("user-1", "ann"),
        ev("e3", "2024-01-02T00:00:00Z").actor("team-1", "owners"),
    ]);
    let history = a.name_history("user-1").expect("name_history");
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].name.as_str(), history[0].kind), ("ann", NameKind::User));
    assert_eq!((history[0].first_seen, history[0].last_seen), (at("2024-01-01T00:00:00Z"), at("2024-01-03T00:00:00Z")));
    assert!(!history[0].listed);

    let listed = [
        named("user-1", NameKind::User, "ann.lee"),
        named("ws-1", NameKind::Workspace, "prod-network"),
        named("ws-2", NameKind::Workspace, "staging"),
    ];
    let outcome = a
        .record_listing(&Listing {
            source: "acme",
            at: at("2024-02-01T00:00:00Z"),
            names: &listed,
            complete: &[NameKind::Workspace, NameKind::User],
        })
        .expect("record_listing");
    assert_eq!((outcome.new, outcome.renamed, outcome.gone), (2, 1, 0), "ws-1 and ws-2 are new; user-1 was renamed");
    assert_eq!(a.listed_at("acme").expect("listed_at"), Some(at("2024-02-01T00:00:00Z")));
    let current = a.current_names(&["user-1", "ws-1", "team-1", "ws-none"]).expect("current_names");
    assert_eq!(current["user-1"].name, "ann.lee", "the newest name is the current one");
    assert_eq!(current["team-1"].name, "owners", "names from events alone count");
    assert!(!current.contains_key("ws-none"));
    let names: Vec<String> = a.name_history("user-1").expect("history").into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["ann", "ann.lee"], "a rename keeps both names, oldest first");

    // ws-2 deleted, ws-1 renamed: the next listing says so.
    let listed = [named("user-1", NameKind::User, "ann.lee"), named("ws-1", NameKind::Workspace, "prod-net")];
    let outcome = a
        .record_listing(&Listing {
            source: "acme",
            at: at("2024-03-01T00:00:00Z"),
            names: &listed,
            complete: &[NameKind::Workspace],
        })
        .expect("record_listing");
    assert_eq!((outcome.new, outcome.renamed, outcome.gone), (0, 1, 1));
    let gone = a.name_history("ws-2").expect("history");
    assert_eq!(gone[0].gone, Some(at("2024-03-01T00:00:00Z")), "a deleted id keeps its name, marked gone");
    assert_eq!(a.current_names(&["ws-2"]).expect("current")["ws-2"].name, "staging");
    let was: Vec<String> = a.ids_named("PROD-NETWORK").expect("ids_named").into_iter().map(|r| r.id).collect();
    assert_eq!(was, ["ws-1"], "a former name still finds the id, case-insensitively");
    let book = a.all_names().expect("all_names");
    assert_eq!(book.name("ws-1"), Some("prod-net"));
    assert_eq!(book.name("user-1"), Some("ann.lee"));
    assert_eq!(book.show("ws-9"), "ws-9");
    // A listing for an organization the archive does not know is refused.
    let refused =
        a.record_listing(&Listing { source: "nobody", at: at("2024-03-01T00:00:00Z"), names: &listed, complete: &[] });
    assert!(refused.is_err());
}
