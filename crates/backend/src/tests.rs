use super::*;

fn sqlite(text: &str) -> PathBuf {
    match Location::parse(text).unwrap() {
        Location::Sqlite(p) => p,
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn paths_and_sqlite_urls_are_sqlite_files() {
    assert_eq!(sqlite("/var/lib/tfaudit/archive.db"), Path::new("/var/lib/tfaudit/archive.db"));
    assert_eq!(sqlite("archive.db"), Path::new("archive.db"));
    assert_eq!(sqlite("sqlite:///var/lib/a.db"), Path::new("/var/lib/a.db"));
    assert_eq!(sqlite("sqlite://data/a.db"), Path::new("data/a.db"));
    assert_eq!(sqlite("sqlite:data/a.db"), Path::new("data/a.db"));
    assert_eq!(sqlite("SQLite:/a.db"), Path::new("/a.db"));
    // A colon without `//` is part of a file name, as it always was.
    assert_eq!(sqlite("backup:2024.db"), Path::new("backup:2024.db"));
    assert_eq!(sqlite("./postgres://x"), Path::new("./postgres://x"));
}

#[test]
fn postgres_urls_are_postgres_and_never_show_a_password() {
    for text in [
        "postgres://tfaudit:s3cr3t-pw@db.example.test:5432/audit",
        "postgresql://tfaudit:s3cr3t-pw@db.example.test/audit?sslmode=require",
        "postgres://tfaudit@db.example.test/audit?password=s3cr3t-pw&sslmode=verify-full",
    ] {
        let location = Location::parse(text).unwrap();
        let Location::Postgres(url) = &location else { panic!("{text}: {location:?}") };
        assert_eq!(url.expose(), text, "the driver gets the URL as written");
        for shown in [location.to_string(), format!("{location:?}"), url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("db.example.test"), "the host is named: {shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        // Registered as a secret: an error echoing it is redacted.
        assert!(!tfaudit_model::redact::redact("password s3cr3t-pw refused").contains("s3cr3t"));
    }
    assert_eq!(
        Location::parse("postgres://tfaudit:p%40ss-w0rd@h/db").unwrap().to_string(),
        "postgres://tfaudit:***@h/db"
    );
    assert!(!tfaudit_model::redact::redact("p@ss-w0rd").contains("p@ss-w0rd"), "decoded too");
    let plain = Location::parse("postgres://tfaudit@127.0.0.1/test").unwrap();
    assert_eq!(plain.to_string(), "postgres://tfaudit@127.0.0.1/test");
}

#[test]
fn unusable_locations_say_why_without_their_secrets() {
    for (text, says) in [
        ("", "empty"),
        ("  ", "empty"),
        ("sqlite://", "needs a path"),
        ("sqlite:", "needs a path"),
        ("mysql://root:hunter2-pw@h/db", "SQLite"),
        ("postgres://user:hunter2-pw@[bad/db", "not a PostgreSQL URL"),
    ] {
        let e = Location::parse(text).unwrap_err();
        assert!(matches!(e, StoreError::InvalidLocation { .. }), "{text}: {e:?}");
        let message = e.to_string();
        assert!(message.contains(says), "{text}: {message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

#[test]
fn an_unreachable_postgres_names_its_host_and_never_the_password() {
    // Nothing listens on port 1 of loopback.
    let e = open("postgres://u:topsecret-pw@127.0.0.1:1/test", Mode::ReadOnly).err().unwrap();
    assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
    let message = e.to_string();
    assert!(message.contains("127.0.0.1") && !message.contains("topsecret"), "{message}");
}

#[test]
fn a_sqlite_location_opens_in_each_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.db");
    let url = format!("sqlite://{}", path.display());
    assert!(matches!(open(&url, Mode::ReadOnly).err(), Some(StoreError::Missing { .. })));
    assert!(matches!(open(&url, Mode::MustExist).err(), Some(StoreError::Missing { .. })));
    let store = open(&url, Mode::CreateIfMissing).unwrap();
    store.source("acme", "https://app.terraform.io").unwrap();
    drop(store);
    // The plain path is the same archive.
    let store = open(path.to_str().unwrap(), Mode::ReadOnly).unwrap();
    assert_eq!(store.status().unwrap().len(), 1);
    assert!(open(path.to_str().unwrap(), Mode::MustExist).is_ok());
}

#[test]
fn a_relative_sqlite_path_follows_its_config_file() {
    let base = Path::new("/etc/tfaudit");
    assert_eq!(Location::parse("a.db").unwrap().relative_to(base), Location::Sqlite(base.join("a.db")));
    assert_eq!(Location::parse("/x/a.db").unwrap().relative_to(base), Location::Sqlite("/x/a.db".into()));
    let pg = Location::parse("postgres://h/db").unwrap();
    assert_eq!(pg.clone().relative_to(base), pg);
}

#[test]
fn a_password_from_the_config_joins_a_url_that_has_none() {
    let Location::Postgres(url) = Location::parse("postgres://audit@127.0.0.1:5432/tfaudit?sslmode=disable").unwrap()
    else {
        panic!("a PostgreSQL location")
    };
    assert!(!url.has_password());
    let with = url.or_password("p&ss=w0rd-CONFIGPW");
    assert!(with.has_password());
    assert_eq!(
        with.expose(),
        "postgres://audit@127.0.0.1:5432/tfaudit?sslmode=disable&password=p%26ss%3Dw0rd-CONFIGPW"
    );
    assert!(!with.to_string().contains("CONFIGPW") && !format!("{with:?}").contains("CONFIGPW"));
    assert_eq!(tfaudit_model::redact::redact("x p&ss=w0rd-CONFIGPW y"), "x <redacted> y");
    for own in ["postgres://audit:mine@h/db", "postgres://audit@h/db?password=mine"] {
        let Location::Postgres(url) = Location::parse(own).unwrap() else { panic!() };
        assert!(url.has_password(), "{own}");
        assert_eq!(url.or_password("other").expose(), own, "the URL's own password wins");
    }
}
