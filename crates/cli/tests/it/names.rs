//! Names for ids: from events, and from an organization's listings read with its
//! `enrich_token` (paged, throttled, renamed, deleted); shown where people read, with
//! machine outputs unchanged.

use tfaudit_sim::SimConfig;

use crate::harness::*;

const ENRICH: &str = "org-token-for-names";

fn config(env: &Env, sim: &tfaudit_sim::Sim) -> String {
    let path = env.path("names.toml");
    std::fs::write(
        &path,
        format!(
            "[[organization]]\nname = \"acme\"\naddress = \"{}\"\ntoken_env = \"AUDIT_TOKEN\"\n\
             enrich_token = {{ env = \"ENRICH_TOKEN\" }}\nenrich_every = \"1h\"\n\n[sync]\nrate_limit = 0\nretry_delay = \"5ms\"\n",
            sim.url()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

async fn run(env: &Env, sim: &tfaudit_sim::Sim, cfg: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", cfg];
    all.extend_from_slice(args);
    env.command(None, &all).env("AUDIT_TOKEN", sim.token()).env("ENRICH_TOKEN", ENRICH).output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_name_ids_everywhere_people_read_and_machine_outputs_stay_exact() {
    let sim = start(SimConfig { events: 400, enrich_token: Some(ENRICH.into()), ..SimConfig::default() }).await;
    // More workspaces than one page of 100 holds, and two 429s to wait out.
    for i in 0..150 {
        sim.set_listed("workspaces", &format!("ws-Extra{i:03}"), &format!("extra-{i}"), None);
    }
    sim.set_listed("workspaces", "ws-Hostile0001", "<script>alert(1)</script>\u{1b}[31m", None);
    sim.throttle_catalogue(2);
    let env = Env::new();
    let cfg = config(&env, &sim);
    let out = run(&env, &sim, &cfg, &["sync"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("warning"), "{}", text(&out.stderr));
    assert!(sim.catalogue_requests() >= 9, "every listing was read, the workspaces in two pages, after two 429s");

    let shown = env.ok(None, &["names", "show", "ws-Extra149", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["names"][0]["name"], "extra-149", "the second page was read");
    assert_eq!(v["names"][0]["listed"], true);
    let user = env.ok(None, &["names", "show", "dmitri", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&user).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("user-"), "a name finds its id: {v}");
    let dmitri = v["id"].as_str().unwrap().to_owned();
    assert!(user.contains("dmitri@example.com"), "members come with their email");

    // A workspace the events act on, and the name its organization lists it under.
    let served = served(&sim);
    let ws = served
        .values()
        .map(|j| serde_json::from_str::<serde_json::Value>(j).unwrap())
        .find_map(|v| {
            let id = v["resource"]["id"].as_str()?.to_owned();
            (id.starts_with("ws-Sim") && v["resource"]["type"] == "workspace").then_some(id)
        })
        .expect("a workspace event");
    let ws_name = tfaudit_sim::default_catalogue().into_iter().find(|e| e.id == ws).expect("a listed workspace").name;

    // The table shows `name (id)`.
    let table = env.ok(None, &["query", "--format", "table", "--limit", "0"]).await;
    assert!(table.contains(&format!("{ws_name} ({ws})")), "{table}");
    assert!(table.contains("dmitri (user-"), "{table}");
    // json: the events as sent plus their names; jsonl and export exactly as sent.
    let array: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(None, &["query", "--format", "json", "--limit", "0"]).await).unwrap();
    let with_ws = array.iter().find(|e| e["resource"]["id"] == ws.as_str()).expect("the workspace event");
    assert_eq!(with_ws["names"][&ws], ws_name.as_str(), "{with_ws}");
    assert_eq!(env.exported().await, served, "export is byte for byte what the API sent");
    let jsonl = env.ok(None, &["query", "--format", "jsonl", "--limit", "0"]).await;
    assert!(!jsonl.contains("\"names\""), "jsonl stays the original events");

    // A resource by name: --resource and history take it.
    let by_name = env.ok(None, &["query", "--resource", &ws_name, "--format", "jsonl", "--limit", "0"]).await;
    let by_id = env.ok(None, &["query", "--resource-id", &ws, "--format", "jsonl", "--limit", "0"]).await;
    assert!(!by_id.is_empty());
    assert_eq!(by_name, by_id);
    let history = env.ok(None, &["history", &ws_name, "--format", "jsonl"]).await;
    assert!(history.lines().count() >= by_id.lines().count());

    // Renamed and deleted in the organization: the next read (forced) keeps both names
    // and marks the deleted one gone.
    let renamed = format!("{ws_name}-v2");
    sim.set_listed("workspaces", &ws, &renamed, None);
    sim.remove_listed("ws-Extra000");
    // A user renamed in the organization: `--actor` finds the events by the new name,
    // which no event carries.
    sim.set_listed("organization-memberships", &dmitri, "dmitri-k", Some("dmitri@example.com"));
    let out = run(&env, &sim, &cfg, &["names", "refresh", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!((r["renamed"].as_u64(), r["gone"].as_u64()), (Some(2), Some(1)), "{r}");
    let by_new_name = env.ok(None, &["query", "--actor", "dmitri-k", "--format", "jsonl", "--limit", "0"]).await;
    let by_user_id = env.ok(None, &["query", "--actor", &dmitri, "--format", "jsonl", "--limit", "0"]).await;
    assert!(!by_user_id.is_empty());
    assert_eq!(by_new_name, by_user_id);
    let shown = env.ok(None, &["names", "show", &ws]).await;
    assert!(shown.contains(&renamed) && shown.contains(&format!("{ws_name} (")), "{shown}");
    let gone = env.ok(None, &["names", "show", "ws-Extra000", "--format", "json"]).await;
    assert!(serde_json::from_str::<serde_json::Value>(&gone).unwrap()["names"][0]["gone"].is_string());
    let hostile = env.ok(None, &["names", "show", "ws-Hostile0001"]).await;
    assert!(!hostile.contains('\u{1b}'), "no raw escape reaches the terminal: {hostile:?}");

    // A sync within enrich_every does not read the listings again.
    let before = sim.catalogue_requests();
    assert!(run(&env, &sim, &cfg, &["sync"]).await.status.success());
    assert_eq!(sim.catalogue_requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enrich_token_costs_names_not_the_sync() {
    let sim = start(SimConfig { events: 50, enrich_token: Some("the-right-one".into()), ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(&env, &sim);
    let out = run(&env, &sim, &cfg, &["sync"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("warning:") && err.contains("enrich_token"), "{err}");
    assert!(!err.contains(ENRICH), "the token is never shown: {err}");
    assert_eq!(env.exported().await.len(), 50);
    // Names from events still come: a user's description.
    let table = env.ok(None, &["query", "--format", "table", "--limit", "0"]).await;
    assert!(table.contains("(user-"), "{table}");
    // And a bad enrich_every is a one-line config error.
    std::fs::write(
        env.path("bad.toml"),
        "[[organization]]\nname = \"acme\"\nenrich_every = \"5s\"\nenrich_token = \"x\"\n",
    )
    .unwrap();
    let out = env.run(None, &["--config", env.path("bad.toml").to_str().unwrap(), "config", "check"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("enrich_every must be at least 1m"), "{}", text(&out.stderr));
}
