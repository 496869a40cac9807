//! The dashboard's investigation pages (actor, resource, "around"), names on every
//! surface people read (pages, filters, alert texts, Slack), and times in the display
//! zone, over a scripted story: alice creates a team token; the token adds a member
//! to owners and creates a second token; that one applies a run.

use tfaudit_sim::SimConfig;

use crate::harness::*;
use crate::receivers::Receivers;
use crate::serve::{Server, wait_for};

const ENRICH: &str = "org-token-for-names";
const ALICE: &str = "user-StoryAlice0001";
const OWNERS: &str = "team-StoryOwners01";

fn story_event(
    now: i64,
    n: i64,
    accessor: &str,
    description: Option<&str>,
    rtype: &str,
    action: &str,
    rid: &str,
) -> serde_json::Value {
    serde_json::json!({
        "id": format!("0000000{n}-invs-4000-8000-000000000000"), "version": "0", "type": "Resource",
        "timestamp": jiff::Timestamp::from_second(now - 3600 + n * 60).unwrap().strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
        "auth": {"accessor_id": accessor, "description": description,
                 "type": "Client", "impersonator_id": null, "organization_id": "org-x"},
        "request": {"id": null},
        "resource": {"id": rid, "type": rtype, "action": action, "meta": {"token_type": "team"}}
    })
}

async fn get_text(r: reqwest::Response) -> (u16, String) {
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn investigation_pages_link_ids_show_names_and_alerts_name_them_too() {
    let sim =
        start(SimConfig { events: 50, hostile: 0.0, enrich_token: Some(ENRICH.into()), ..SimConfig::default() }).await;
    sim.set_listed("teams", OWNERS, "story-owners", None);
    sim.set_listed("workspaces", "ws-StoryHostile01", "<script>alert(1)</script>", None);
    let now = jiff::Timestamp::now().as_second();
    let story = [
        story_event(now, 1, ALICE, Some("story-alice"), "authentication_token", "create", "at-StoryTeamToken1"),
        story_event(now, 2, "at-StoryTeamToken1", None, "team", "add_member", OWNERS),
        story_event(now, 3, "at-StoryTeamToken1", None, "authentication_token", "create", "at-StoryToken0002"),
        story_event(now, 4, "at-StoryToken0002", None, "run", "apply", "run-Story0001"),
        story_event(now, 5, ALICE, Some("story-alice"), "workspace", "update", "ws-StoryHostile01"),
    ];
    let ids: Vec<String> =
        story.iter().enumerate().map(|(n, e)| sim.add_event_json(now - 3600 + (n as i64 + 1) * 60, e)).collect();
    let receivers = Receivers::start().await;
    let env = Env::new();
    let cfg = env.path("tfaudit.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sync]\ninterval = \"1s\"\nrate_limit = 0\nretry_delay = \"5ms\"\nmax_retries = 1\n\n\
             [[organization]]\nname = \"acme\"\naddress = \"{}\"\ntoken_env = \"TOKEN_ACME\"\n\
             enrich_token = {{ env = \"ENRICH_TOKEN\" }}\n\n\
             [display]\ntimezone = \"Europe/Berlin\"\n\n[alerts]\nenabled = true\n\n\
             [[destination]]\nname = \"slack\"\ntype = \"slack\"\nurl = \"{}/slack\"\n",
            sim.url(),
            receivers.url
        ),
    )
    .unwrap();
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token()), ("ENRICH_TOKEN", ENRICH)]).await;
    wait_for("the first sync", async || server.get("/readyz").await.status() == 200).await;
    wait_for("the story", async || server.get(&format!("/api/events/{}", ids[4])).await.status() == 200).await;

    // The actor page: alice by name (unique: the simulator has an alice of its own), her tokens followed from token to token.
    let (status, page) = get_text(server.get("/actors/story-alice").await).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&format!("<h1 id=\"actor\">story-alice ({ALICE})</h1>")), "{page}");
    for link in ["/actors/at-StoryTeamToken1", "/actors/at-StoryToken0002", &format!("/events/{}", ids[0])] {
        assert!(page.contains(&format!("href=\"{link}\"")), "{link} linked in {page}");
    }
    assert!(page.contains("run.apply"), "what the second token did: {page}");
    assert!(page.contains("times in Europe&#x2f;Berlin"), "the display zone is named (HTML-escaped)");
    assert!(page.contains("+01:00") || page.contains("+02:00"), "times carry the zone's offset");

    // The resource page: the team by its listed name, and its life.
    let (status, team) = get_text(server.get("/resources/story-owners").await).await;
    assert_eq!(status, 200, "{team}");
    assert!(team.contains(&format!("story-owners ({OWNERS})")), "{team}");
    assert!(
        team.contains(&format!("href=\"/events/{}\"", ids[1])) && team.contains("Its life: 1 event about it"),
        "{team}"
    );
    assert!(team.contains("id=\"names\""), "the names it has had are listed");
    // A hostile listed name is text on every page.
    let (_, ws) = get_text(server.get("/resources/ws-StoryHostile01").await).await;
    assert!(ws.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;") && !ws.contains("<script>"), "{ws}");

    // The events list: ids linked to their pages, names shown, filters take names.
    let (_, list) = get_text(server.get("/?since=1d&resource_id=story-owners").await).await;
    assert!(
        list.contains(&format!("href=\"/resources/{OWNERS}\"")) && list.contains(&format!("story-owners ({OWNERS})")),
        "{list}"
    );
    assert_eq!(list.matches("class=\"event-link\"").count(), 1, "only the team's event: {list}");
    let (_, mine) = get_text(server.get("/?since=1d&actor=story-alice").await).await;
    assert_eq!(mine.matches("class=\"event-link\"").count(), 2, "alice's two events: {mine}");

    // Around the token's first event: its own events within the window, not the others'.
    let (status, around) = get_text(server.get(&format!("/events/{}/around?window=10m", ids[1])).await).await;
    assert_eq!(status, 200, "{around}");
    assert!(around.contains(&format!("/events/{}\"", ids[2])) && around.contains("class=\"anchor\""), "{around}");
    assert!(!around.contains(&format!("/events/{}\"", ids[3])), "another actor's event: {around}");
    let (status, bad) = get_text(server.get(&format!("/events/{}/around?window=soon", ids[1])).await).await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad.contains("window:"), "{bad}");
    let (status, _) = get_text(server.get("/events/no-such-event/around").await).await;
    assert_eq!(status, 404);
    // The event page links to all three.
    let (_, event) = get_text(server.get(&format!("/events/{}", ids[1])).await).await;
    for link in [
        "/actors/at-StoryTeamToken1",
        &format!("/resources/{OWNERS}"),
        &format!("/events/{}/around?window=10m", ids[1]),
    ] {
        assert!(event.contains(&format!("href=\"{link}\"")), "{link} in {event}");
    }

    // A late event by the owners team: its alert names the team, in the text and on Slack.
    let late = story_event(now + 3600, 9, OWNERS, None, "authentication_token", "create", "at-StoryToken0009");
    sim.add_event_json(now, &late);
    let inbox = receivers.inbox.clone();
    wait_for("the alert on Slack", async || !inbox.slack.lock().unwrap().is_empty()).await;
    let alerts = server.json("/api/alerts").await;
    let text = alerts["alerts"][0]["text"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains(&format!("By story-owners ({OWNERS})")), "{alerts}");
    let slack = inbox.slack.lock().unwrap()[0].to_string();
    assert!(slack.contains(&format!("story-owners ({OWNERS})")), "{slack}");

    // A picture of the actor page, for the README.
    let chromium = crate::dashboard::find_program("chromium");
    let png = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-artifacts/investigation.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let out = std::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", env.path("chromium-profile").display()),
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1100",
            &format!("{}/actors/{ALICE}", server.url),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {}", text_of(&out.stderr));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    server.stop().await;
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
