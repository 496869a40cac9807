//! Credentials: where tokens come from, what a bad one says, and that a token is never
//! shown.

use tfaudit_sim::SimConfig;

use crate::harness::*;

const SECRET: &str = "Zk9secretTOKENvalue.atlasv1.DoNotLeak";

fn leaks(out: &std::process::Output) -> bool {
    text(&out.stdout).contains("DoNotLeak") || text(&out.stderr).contains("DoNotLeak")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_says_how_to_make_one_and_is_never_shown() {
    let sim = start(SimConfig { events: 10, ..SimConfig::default() }).await;
    let env = Env::new();
    let out = env
        .command(None, &["--debug", "sync"])
        .env("TFE_ADDRESS", sim.url())
        .env("TFE_TOKEN", SECRET)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("the token was rejected") && err.contains("audit trail token"), "{err}");
    assert!(!leaks(&out), "the token appeared in the output");
    assert_eq!(sim.stats().unauthorized, 1, "a 401 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_audit_logging_gets_the_entitlement_message() {
    let sim = start(SimConfig { events: 10, forbidden_token: Some(SECRET.into()), ..SimConfig::default() }).await;
    let env = Env::new();
    let out = env
        .command(None, &["--debug", "sync"])
        .env("TFE_ADDRESS", sim.url())
        .env("TFE_TOKEN", SECRET)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("organization token or audit trail token") && err.contains("Standard/Premium"), "{err}");
    assert!(!leaks(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_anywhere_names_every_place_to_put_one() {
    let env = Env::new();
    let out = env.run(None, &["sync"]).await;
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains("TFE_TOKEN") && err.contains("TF_TOKEN_app_terraform_io") && err.contains("terraform login"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_found_where_terraform_keeps_them() {
    let sim = start(SimConfig { events: 20, token: SECRET.into(), ..SimConfig::default() }).await;
    let host = sim.url().trim_start_matches("http://").split(':').next().unwrap().to_owned();
    // TF_TOKEN_<host>
    let env = Env::new();
    let var = format!("TF_TOKEN_{}", host.replace('.', "_"));
    let out =
        env.command(None, &["--debug", "sync"]).env("TFE_ADDRESS", sim.url()).env(&var, SECRET).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!leaks(&out));
    // ~/.terraform.d/credentials.tfrc.json
    let env = Env::new();
    std::fs::create_dir_all(env.path(".terraform.d")).unwrap();
    std::fs::write(
        env.path(".terraform.d/credentials.tfrc.json"),
        format!(r#"{{"credentials":{{"{host}":{{"token":"{SECRET}"}}}}}}"#),
    )
    .unwrap();
    let out = env.command(None, &["sync"]).env("TFE_ADDRESS", sim.url()).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // --token-file wins over a wrong TFE_TOKEN.
    let env = Env::new();
    std::fs::write(env.path("token"), format!("{SECRET}\n")).unwrap();
    let token_file = env.path("token");
    let out = env
        .command(None, &["sync", "--token-file", token_file.to_str().unwrap()])
        .env("TFE_ADDRESS", sim.url())
        .env("TFE_TOKEN", "wrong")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sim.stats().unauthorized, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_file_is_private_and_holds_no_token() {
    let sim = start(SimConfig { events: 30, token: SECRET.into(), ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&env.db).unwrap().permissions().mode() & 0o777, 0o600);
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", env.db.display());
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(!String::from_utf8_lossy(&bytes).contains("DoNotLeak"), "{path} holds the token");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_echo_of_the_token_is_redacted() {
    use axum::response::IntoResponse;
    // A server that refuses the request and quotes it back, token and all.
    let url = serve_pages(|_, headers| {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let detail = format!("bad request: GET with Authorization: {auth}");
        let body = serde_json::json!({"errors": [{"status": "400", "title": "bad", "detail": detail}]}).to_string();
        (axum::http::StatusCode::BAD_REQUEST, body).into_response()
    })
    .await;
    let env = Env::new();
    let out =
        env.command(None, &["--debug", "sync", "--address", &url]).env("TFE_TOKEN", SECRET).output().await.unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("Authorization: Bearer <redacted>"), "{err}");
    assert!(!leaks(&out), "{err}");
    let stored = env.ok(None, &["status", "--format", "json"]).await;
    assert!(stored.contains("Bearer <redacted>") && !stored.contains("DoNotLeak"), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_credentials_never_print_the_token() {
    let env = Env::new();
    std::fs::create_dir_all(env.path(".terraform.d")).unwrap();
    std::fs::write(
        env.path(".terraform.d/credentials.tfrc.json"),
        format!(r#"{{"credentials":{{"app.terraform.io":"{SECRET}"}}}}"#),
    )
    .unwrap();
    let out = env.run(None, &["--debug", "sync"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("credentials.app.terraform.io is a string, where an object"), "{err}");
    assert!(!leaks(&out), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_hide_a_secret_the_server_echoes() {
    use axum::response::IntoResponse;
    // A 200 that is not a page, quoting the request: the retry warning quotes the parse
    // error, which quotes the server's text. Only the log writer stands in the way.
    let url = serve_pages(|_, headers| {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = serde_json::json!({"data": [], "meta": format!("you sent {auth}")}).to_string();
        ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    })
    .await;
    let env = Env::new();
    for format in ["text", "json"] {
        let out = env
            .command(
                None,
                &["--log-format", format, "sync", "--address", &url, "--max-retries", "1", "--retry-delay", "5ms"],
            )
            .env("TFE_TOKEN", SECRET)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        let warning =
            err.lines().find(|l| l.contains("retry 1 of 1")).unwrap_or_else(|| panic!("no retry logged: {err}"));
        assert!(warning.contains("Bearer <redacted>"), "{warning}");
        assert!(!leaks(&out), "{err}");
    }
}
