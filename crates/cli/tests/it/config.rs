//! The config file and bad input: several organizations, per-organization settings,
//! and one-line errors naming the fix.

use tfaudit_sim::{Faults, SimConfig};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_with_two_organizations_syncs_both_and_one_failing_does_not_stop_the_other() {
    let a = start(SimConfig { events: 300, token: "token-a".into(), ..SimConfig::default() }).await;
    let b = start(SimConfig {
        events: 200,
        token: "token-b".into(),
        organization_id: "org-Bravo".into(),
        seed: 5,
        ..SimConfig::default()
    })
    .await;
    let env = Env::new();
    std::fs::write(env.path("b.token"), "token-b\n").unwrap();
    let config = format!(
        r#"
[sync]
rate_limit = 0
retry_delay = "5ms"

[[organization]]
name = "alpha"
address = "{}"
token_env = "ALPHA_TOKEN"

[[organization]]
name = "bravo"
address = "{}"
token_file = "{}"
[organization.sync]
page_size = 50
"#,
        a.url(),
        b.url(),
        env.path("b.token").display()
    );
    std::fs::write(env.path("tfaudit.toml"), config).unwrap();
    let cfg = env.path("tfaudit.toml");
    let cfg = cfg.to_str().unwrap();
    let out = env.command(None, &["--config", cfg, "sync"]).env("ALPHA_TOKEN", "token-a").output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("alpha: 300 new events") && stdout.contains("bravo: 200 new events"), "{stdout}");
    assert_eq!(b.stats().requests, 4, "bravo's own page size");
    let listed = env.ok(None, &["query", "--org", "bravo", "--limit", "0"]).await;
    assert_eq!(listed.lines().count(), 200);

    // One organization failing: the other is still synced, and the exit code says so.
    b.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let now = jiff::Timestamp::now().as_second();
    a.add_event(now);
    let out = env
        .command(None, &["--config", cfg, "sync", "--max-retries", "1"])
        .env("ALPHA_TOKEN", "token-a")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stdout).contains("alpha: 1 new events"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("bravo"), "{}", text(&out.stderr));

    // --org picks one.
    b.set_faults(Faults::default());
    let out = env.command(None, &["--config", cfg, "sync", "--org", "bravo"]).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("alpha"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mistakes_name_the_line() {
    let env = Env::new();
    std::fs::write(env.path("bad.toml"), "[sync]\ninterval = \"1m\"\nintervl = \"2m\"\n").unwrap();
    let out = env.run(None, &["--config", env.path("bad.toml").to_str().unwrap(), "sync"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml:3:") && err.contains("intervl"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_get_one_line_each() {
    let env = Env::new();
    for (args, needle) in [
        (vec!["sync", "--overlap", "soon"], "not a duration"),
        (vec!["sync", "--overlap", "0s"], "overlap must be at least 1s"),
        (vec!["sync", "--page-size", "0"], "page_size"),
        (vec!["sync", "--address", "ftp://x"], "https://"),
        (vec!["query", "--since", "last tuesday"], "--since"),
        (vec!["query", "--since", "1d", "--until", "2d"], "must be before"),
        (vec!["query", "--format", "xml"], "xml"),
        (vec!["sim", "--error-rate", "2"], "between 0 and 1"),
        (vec!["watch", "--lease", "soon"], "not a duration"),
        (vec!["watch", "--lease", "10ms"], "a lease must last at least 1s"),
        (vec!["serve", "--instance", " "], "name this instance"),
    ] {
        let out = env.command(None, &args).env("TFE_TOKEN", "t").output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_lease_from_the_environment_names_it() {
    let env = Env::new();
    let out =
        env.command(None, &["watch"]).env("TFE_TOKEN", "t").env("TFAUDIT_LEASE", "banana").output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("TFAUDIT_LEASE \"banana\" is not a duration"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!env.db.exists(), "nothing is created before the settings are checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let sim = start(SimConfig {
        events: 300,
        max_page_size: 50,
        faults: Faults { error_rate: 0.5, ..Faults::default() },
        ..SimConfig::default()
    })
    .await;
    let env = Env::new();
    let out = env
        .command(
            Some(&sim),
            &["--log-format", "json", "sync", "--retry-delay", "5ms", "--rate-limit", "0", "--max-retries", "40"],
        )
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stderr).lines().map(str::to_owned).collect();
    assert!(!lines.is_empty(), "retries were logged");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("retry")));
}

/// Runs the binary as the unprivileged user `nobody` (root, which the tests run as,
/// ignores file modes, so only another user shows what an auditor's copy allows).
fn as_nobody(args: &[&str]) -> std::process::Output {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("setpriv (util-linux) is needed to run a read command as another user");
    std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", BIN])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_work_on_a_read_only_archive() {
    use std::os::unix::fs::{PermissionsExt, chown};
    let sim = start(SimConfig { events: 300, ..SimConfig::default() }).await;
    let env = Env::new();
    let out = env.sync(&sim, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = env.exported().await;

    // An auditor's copy: the file 0400 in a 0500 folder, both owned by the reader.
    let outer = tempfile::tempdir().unwrap();
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = outer.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let db = copy.join("archive.db");
    std::fs::copy(&env.db, &db).unwrap();
    for p in [&db, &copy] {
        chown(p, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o500)).unwrap();
    let bytes = std::fs::read(&db).unwrap();
    let listing = || {
        let mut names: Vec<String> =
            std::fs::read_dir(&copy).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };

    let dbs = db.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--db", dbs];
        all.extend_from_slice(args);
        let out = as_nobody(&all);
        assert!(out.status.success(), "{args:?} on a read-only archive: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let exported = run(&["export", "--format", "jsonl"]);
    assert_eq!(exported.lines().count(), expected.len());
    for line in exported.lines() {
        let id = serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].as_str().unwrap().to_owned();
        assert_eq!(expected[&id], line);
    }
    assert_eq!(run(&["query", "--limit", "0", "--format", "jsonl"]).lines().count(), expected.len());
    let status: serde_json::Value = serde_json::from_str(&run(&["status", "--format", "json"])).unwrap();
    assert_eq!(status["organizations"][0]["events"], expected.len());
    let summary: serde_json::Value =
        serde_json::from_str(&run(&["summary", "--since", "30d", "--format", "json"])).unwrap();
    assert_eq!(summary["total"], expected.len());

    assert_eq!(std::fs::read(&db).unwrap(), bytes, "the archive's bytes are unchanged");
    assert_eq!(listing(), vec!["archive.db".to_owned()], "no -wal or -shm was created beside it");

    // An archive that truly cannot be read: one line that says so, and exit code 5.
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = as_nobody(&["--db", dbs, "status"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(dbs) && err.contains("permissions"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_type_errors_never_print_a_secret_value() {
    let env = Env::new();
    for (text, line) in [
        "[[destination]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://x.test/h\"\nheaders = \"X-Api-Key CFGLEAK-header\"\n",
        "[[destination]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://x.test/h\"\nheaders = { \"X-Api-Key\" = 12345678 }\n",
        "[serve]\naccess_token = [\"CFGLEAK-access-token\"]\n",
    ]
    .into_iter()
    .zip([5, 5, 2])
    {
        std::fs::write(env.path("t.toml"), text).unwrap();
        let out = env.run(None, &["--config", env.path("t.toml").to_str().unwrap(), "config", "check"]).await;
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = crate::harness::text(&out.stderr);
        assert!(err.contains(&format!("t.toml:{line}:")), "{text}: {err}");
        assert!(!err.contains("CFGLEAK") && !err.contains("12345678"), "{text}: {err}");
    }
}

/// `--db`, `TFAUDIT_DB` and the config's `db` take a path or a URL: `sqlite://PATH` is
/// the same file as the path; a PostgreSQL URL is refused (for now) naming the host
/// but never the password, and an unknown scheme is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_location_is_a_path_or_a_url() {
    let sim = start(SimConfig { events: 40, ..SimConfig::default() }).await;
    let env = Env::new();
    let url = format!("sqlite://{}", env.db.display());
    let out = env.command(Some(&sim), &["sync", "--rate-limit", "0"]).env("TFAUDIT_DB", &url).output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(events_in(&env.db), 40, "the URL named the same file");
    // The plain path and `sqlite:PATH` read it back.
    let listed = env.ok(None, &["query", "--limit", "0"]).await;
    assert_eq!(listed.lines().count(), 40);
    let short = format!("sqlite:{}", env.db.display());
    let listed = env.ok(None, &["--db", &short, "query", "--limit", "0"]).await;
    assert_eq!(listed.lines().count(), 40);
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(None, &["--db", &url, "status", "--format", "json"]).await).unwrap();
    assert_eq!(status["archive"], env.db.display().to_string(), "status names the file, as before");

    // A config's `db` URL, and its relative path against the config's folder.
    std::fs::write(env.path("tfaudit.toml"), "db = \"sqlite://data/archive.db\"\n").unwrap();
    let cfg = env.path("tfaudit.toml");
    let out = env
        .command(None, &["--config", cfg.to_str().unwrap(), "query", "--limit", "0"])
        .env_remove("TFAUDIT_DB")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 40);

    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let pg = "postgres://tfaudit:n0t-in-any-output@127.0.0.1:1/audit";
    for args in [vec!["--db", pg, "status"], vec!["--db", pg, "sync"]] {
        let out = env.run(Some(&sim), &args).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(5), "{args:?}: {stderr}");
        assert!(stderr.contains("127.0.0.1:1") && stderr.contains("PostgreSQL"), "{stderr}");
        assert!(!stderr.contains("n0t-in-any-output") && !stdout.contains("n0t-in-any-output"), "{stderr}");
    }
    let out = env.run(None, &["--db", "mysql://root:hunter2-pw@h/db", "status"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("hunter2"), "{}", text(&out.stderr));
}
