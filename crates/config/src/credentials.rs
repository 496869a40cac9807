//! Finding the token the way Terraform users already keep it. First found wins:
//!
//! 1. `--token-file PATH` (or a config entry's `token_file` / `token_env`)
//! 2. `TFE_TOKEN`, as the tfe provider and go-tfe tools read it
//! 3. `TF_TOKEN_<host>`, as Terraform reads it: the host with `.` as `_` and `-` as
//!    `__` (`TF_TOKEN_app_terraform_io`); `-` written as a single `_` is accepted too
//! 4. `~/.terraform.d/credentials.tfrc.json`, which `terraform login` writes

use std::path::{Path, PathBuf};

use tfaudit_api::Token;
use tfaudit_api::token::TokenError;

/// Where a token came from, for messages (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
    CredentialsFile(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "the file {}", p.display()),
            Self::Env(v) => write!(f, "${v}"),
            Self::CredentialsFile(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A token and where it was found.
#[derive(Debug, Clone)]
pub struct FoundToken {
    pub token: Token,
    pub source: TokenSource,
}

/// Why no usable token was found.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no token for {host}: pass --token-file, set TFE_TOKEN or {host_var}, or run `terraform login {host}`; \
         it must be an organization token or an audit trail token"
    )]
    NotFound { host: String, host_var: String },
    #[error("cannot read the token file {path}: {cause}; check the path and its permissions")]
    Unreadable { path: PathBuf, cause: String },
    #[error("the token in {origin} is unusable: {problem}")]
    Unusable { origin: TokenSource, problem: TokenError },
    #[error(
        "cannot read {path}: {cause}; fix or remove the file, or give the token another way (--token-file, TFE_TOKEN)"
    )]
    BadCredentialsFile { path: PathBuf, cause: String },
    #[error("the environment variable {var} named in the config is not set; set it, or use token_file")]
    MissingEnv { var: String },
}

/// The environment, behind a trait so that tests need not touch the process's.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn vars(&self) -> Vec<(String, String)>;
    fn home(&self) -> Option<PathBuf>;
}

/// The process's environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
    }
    fn home(&self) -> Option<PathBuf> {
        dirs::home_dir()
    }
}

/// Where to look first: a file or an environment variable named by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explicit<'a> {
    None,
    File(&'a Path),
    Env(&'a str),
}

/// Finds the token for `host` (the address's host name).
///
/// # Errors
/// [`CredentialsError`], each naming the fix.
pub fn find_token(host: &str, explicit: Explicit<'_>, env: &dyn Env) -> Result<FoundToken, CredentialsError> {
    let make = |value: &str, source: TokenSource| match Token::new(value) {
        Ok(token) => Ok(FoundToken { token, source }),
        Err(problem) => Err(CredentialsError::Unusable { origin: source, problem }),
    };
    match explicit {
        Explicit::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CredentialsError::Unreadable { path: path.to_owned(), cause: e.to_string() })?;
            return make(&text, TokenSource::File(path.to_owned()));
        }
        Explicit::Env(var) => {
            let value = env.var(var).ok_or_else(|| CredentialsError::MissingEnv { var: var.to_owned() })?;
            return make(&value, TokenSource::Env(var.to_owned()));
        }
        Explicit::None => {}
    }
    if let Some(value) = env.var("TFE_TOKEN").filter(|v| !v.trim().is_empty()) {
        return make(&value, TokenSource::Env("TFE_TOKEN".into()));
    }
    let host = host.to_ascii_lowercase();
    let mut host_vars: Vec<(String, String)> =
        env.vars().into_iter().filter(|(k, v)| host_var_matches(k, &host) && !v.trim().is_empty()).collect();
    // Deterministic when several spellings are set.
    host_vars.sort();
    if let Some((name, value)) = host_vars.into_iter().next() {
        return make(&value, TokenSource::Env(name));
    }
    if let Some(home) = env.home() {
        let path = home.join(".terraform.d").join("credentials.tfrc.json");
        if let Some(token) = read_credentials_file(&path, &host)? {
            return make(&token, TokenSource::CredentialsFile(path));
        }
    }
    Err(CredentialsError::NotFound { host_var: host_var_name(&host), host })
}

/// Terraform's spelling of the variable for a host.
#[must_use]
pub fn host_var_name(host: &str) -> String {
    format!("TF_TOKEN_{}", host.replace('-', "__").replace('.', "_"))
}

fn host_var_matches(name: &str, host: &str) -> bool {
    let Some(encoded) = name.strip_prefix("TF_TOKEN_") else {
        return false;
    };
    // Terraform's decoding: "__" is "-", then "_" is ".", compared case-insensitively.
    let decoded = encoded.replace("__", "-").replace('_', ".").to_ascii_lowercase();
    if decoded == host {
        return true;
    }
    // Also accept "-" written as one "_" (app-eu.example.com as TF_TOKEN_app_eu_example_com).
    encoded.to_ascii_lowercase() == host.replace(['.', '-'], "_")
}

fn read_credentials_file(path: &Path, host: &str) -> Result<Option<String>, CredentialsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialsError::BadCredentialsFile { path: path.to_owned(), cause: e.to_string() });
        }
    };
    let bad = |cause: String| CredentialsError::BadCredentialsFile { path: path.to_owned(), cause };
    // Read as plain JSON first and checked by hand: serde's typed errors quote the value
    // they did not expect ("invalid type: string \"<token>\""), and here that is the
    // token. Syntax errors name only a position.
    let file: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let Some(credentials) = file.get("credentials") else {
        return Ok(None);
    };
    let serde_json::Value::Object(hosts) = credentials else {
        return Err(bad(format!("\"credentials\" is {}, where an object of hosts belongs", kind(credentials))));
    };
    let Some((name, entry)) = hosts.iter().find(|(h, _)| h.to_ascii_lowercase() == host) else {
        return Ok(None);
    };
    let shown = name.escape_debug();
    match entry.get("token") {
        None if entry.is_object() => Ok(None),
        Some(serde_json::Value::String(token)) => Ok(Some(token.clone())),
        Some(serde_json::Value::Null) => Ok(None),
        Some(other) => Err(bad(format!("credentials.{shown}.token is {}, where a string belongs", kind(other)))),
        None => Err(bad(format!(
            "credentials.{shown} is {}, where an object such as {{\"token\": \"...\"}} belongs",
            kind(entry)
        ))),
    }
}

/// A JSON value's type, for messages that must not show the value.
fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv {
        vars: HashMap<String, String>,
        home: Option<PathBuf>,
    }

    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).cloned()
        }
        fn vars(&self) -> Vec<(String, String)> {
            self.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        fn home(&self) -> Option<PathBuf> {
            self.home.clone()
        }
    }

    fn env(vars: &[(&str, &str)], home: Option<&Path>) -> FakeEnv {
        FakeEnv {
            vars: vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            home: home.map(Path::to_owned),
        }
    }

    fn found(host: &str, explicit: Explicit<'_>, e: &FakeEnv) -> (String, TokenSource) {
        let f = find_token(host, explicit, e).unwrap();
        (f.token.expose().to_owned(), f.source)
    }

    #[test]
    fn order_of_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join(".terraform.d")).unwrap();
        std::fs::write(
            home.join(".terraform.d/credentials.tfrc.json"),
            r#"{"credentials":{"App.Terraform.io":{"token":"from-credentials-file"}}}"#,
        )
        .unwrap();
        let token_file = home.join("t");
        std::fs::write(&token_file, "from-token-file\n").unwrap();
        let host = "app.terraform.io";
        let all = env(&[("TFE_TOKEN", "from-tfe-token"), ("TF_TOKEN_app_terraform_io", "from-host-var")], Some(home));
        assert_eq!(found(host, Explicit::File(&token_file), &all).0, "from-token-file");
        assert_eq!(found(host, Explicit::None, &all).0, "from-tfe-token");
        let no_tfe = env(&[("TF_TOKEN_app_terraform_io", "from-host-var")], Some(home));
        assert_eq!(
            found(host, Explicit::None, &no_tfe),
            ("from-host-var".into(), TokenSource::Env("TF_TOKEN_app_terraform_io".into()))
        );
        let only_file = env(&[], Some(home));
        assert_eq!(found(host, Explicit::None, &only_file).0, "from-credentials-file");
        let nothing = env(&[], None);
        let e = find_token(host, Explicit::None, &nothing).unwrap_err().to_string();
        assert!(e.contains("TF_TOKEN_app_terraform_io") && e.contains("terraform login"), "{e}");
    }

    #[test]
    fn host_variable_spellings() {
        let host = "tfe-eu.example.com";
        for var in ["TF_TOKEN_tfe__eu_example_com", "TF_TOKEN_tfe_eu_example_com", "TF_TOKEN_TFE__EU_EXAMPLE_COM"] {
            assert_eq!(found(host, Explicit::None, &env(&[(var, "t")], None)).0, "t", "{var}");
        }
        assert!(find_token(host, Explicit::None, &env(&[("TF_TOKEN_app_terraform_io", "t")], None)).is_err());
        assert_eq!(host_var_name(host), "TF_TOKEN_tfe__eu_example_com");
    }

    #[test]
    fn problems_are_named_without_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = find_token("h", Explicit::File(&missing), &env(&[], None)).unwrap_err().to_string();
        assert!(e.contains("cannot read the token file"), "{e}");
        let e = find_token("h", Explicit::None, &env(&[("TFE_TOKEN", "sec ret")], None)).unwrap_err().to_string();
        assert!(e.contains("$TFE_TOKEN") && !e.contains("sec"), "{e}");
        let e = find_token("h", Explicit::Env("MY_TOKEN"), &env(&[], None)).unwrap_err().to_string();
        assert!(e.contains("MY_TOKEN"), "{e}");
        std::fs::create_dir_all(dir.path().join(".terraform.d")).unwrap();
        std::fs::write(
            dir.path().join(".terraform.d/credentials.tfrc.json"),
            r#"{"credentials": {"h": {"token": "secret-value"#,
        )
        .unwrap();
        let e = find_token("h", Explicit::None, &env(&[], Some(dir.path()))).unwrap_err().to_string();
        assert!(e.contains("credentials.tfrc.json") && !e.contains("secret-value"), "{e}");
    }

    #[test]
    fn malformed_credentials_never_print_the_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".terraform.d")).unwrap();
        let file = dir.path().join(".terraform.d/credentials.tfrc.json");
        for (text, expected) in [
            (r#"{"credentials":{"h":"tok-MALFORMED.atlasv1.leak"}}"#, "credentials.h is a string, where an object"),
            (r#"{"credentials":{"h":{"token":["tok-MALFORMED.atlasv1.leak"]}}}"#, "credentials.h.token is an array"),
            (r#"{"credentials":"tok-MALFORMED.atlasv1.leak"}"#, "\"credentials\" is a string"),
            (r#"{"credentials":{"h":{"token":"tok-MALFORMED.atlasv1.leak"x}}}"#, "line 1 column"),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = find_token("h", Explicit::None, &env(&[], Some(dir.path()))).unwrap_err().to_string();
            assert!(e.contains(expected) && !e.contains("MALFORMED"), "{text}: {e}");
        }
        // Other hosts' entries are not this host's concern.
        std::fs::write(&file, r#"{"credentials":{"other":"x","h":{"token":"good"}}}"#).unwrap();
        assert_eq!(found("h", Explicit::None, &env(&[], Some(dir.path()))).0, "good");
    }
}
