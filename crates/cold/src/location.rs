//! Where days are pushed: a directory, or a bucket and prefix in S3 (or an
//! S3-compatible server), GCS or Azure, all through `object_store`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use tfaudit_model::Secret;

use crate::ColdError;

/// What to write in `--to`, `TFAUDIT_ARCHIVE_TO` or `[archive] location`.
const FORMS: &str =
    "a directory (a path or file:///path), s3://bucket/prefix, gs://bucket/prefix or az://container/prefix";

/// A push's destination, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Directory(PathBuf),
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = |f: &mut fmt::Formatter<'_>, scheme: &str, bucket: &str, prefix: &str| {
            if prefix.is_empty() { write!(f, "{scheme}://{bucket}") } else { write!(f, "{scheme}://{bucket}/{prefix}") }
        };
        match self {
            Self::Directory(p) => write!(f, "{}", p.display()),
            Self::S3 { bucket, prefix } => url(f, "s3", bucket, prefix),
            Self::Gcs { bucket, prefix } => url(f, "gs", bucket, prefix),
            Self::Azure { container, prefix } => url(f, "az", container, prefix),
        }
    }
}

impl Location {
    /// Reads a location as the user wrote it.
    ///
    /// # Errors
    /// [`ColdError::Location`], one line naming the forms that work. The text itself is
    /// not repeated when it could hold credentials (`user:key@`).
    pub fn parse(text: &str) -> Result<Self, ColdError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ColdError::Location(format!("the archive location is empty; write {FORMS}")));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Self::Directory(PathBuf::from(text)));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            if !rest.starts_with('/') {
                return Err(ColdError::Location(format!(
                    "the archive location {text:?} names a host; a file URL is file:///absolute/path"
                )));
            }
            return Ok(Self::Directory(PathBuf::from(rest)));
        }
        if !matches!(scheme.as_str(), "s3" | "gs" | "az") {
            let shown: String = scheme.chars().take(20).collect();
            return Err(ColdError::Location(format!(
                "archive locations of the scheme {shown:?} are not supported; write {FORMS}"
            )));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') || bucket.contains(':') {
            return Err(ColdError::Location(format!(
                "the {scheme}:// archive location holds credentials or a port; write {scheme}://bucket/prefix and give credentials by environment or [archive] access_key_id / secret_access_key (an endpoint by [archive] endpoint)"
            )));
        }
        if bucket.is_empty() {
            return Err(ColdError::Location(format!(
                "the archive location {text:?} names no bucket; write {scheme}://bucket/prefix"
            )));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            Key::parse(prefix).map_err(|e| {
                ColdError::Location(format!(
                    "the archive location {text:?} has an unusable prefix ({e}); use segments without '.', '..' or empty ones"
                ))
            })?;
        }
        let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
        Ok(match scheme.as_str() {
            "s3" => Self::S3 { bucket, prefix },
            "gs" => Self::Gcs { bucket, prefix },
            _ => Self::Azure { container: bucket, prefix },
        })
    }

    /// A relative directory taken as relative to `base` (the config file's folder).
    #[must_use]
    pub fn relative_to(self, base: &Path) -> Self {
        match self {
            Self::Directory(p) if p.is_relative() => Self::Directory(base.join(p)),
            other => other,
        }
    }

    /// Connects: creates a directory that does not exist yet; builds the object store
    /// client (no request is made until the push).
    ///
    /// # Errors
    /// [`ColdError::Location`] for a directory that cannot be made or settings the
    /// client refuses.
    pub fn open(&self, s3: &S3Settings) -> Result<Target, ColdError> {
        let shown = self.to_string();
        let bad = |what: &str, e: &dyn fmt::Display| {
            ColdError::Location(format!("{shown}: {what}: {}", crate::error::one_line(&e.to_string())))
        };
        // A failing request is tried again for up to a minute, then the push stops
        // (and the next one goes on where it stopped).
        let retry = RetryConfig { max_retries: 5, retry_timeout: Duration::from_secs(60), ..RetryConfig::default() };
        let (store, prefix): (Arc<dyn ObjectStore>, &str) = match self {
            Self::Directory(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ColdError::Location(format!(
                        "cannot create the directory {}: {e}; check the path and its permissions (--to, TFAUDIT_ARCHIVE_TO or [archive] location)",
                        dir.display()
                    ))
                })?;
                // Each put writes a temporary file, syncs it and renames it into place, so
                // a crash never leaves half a file under a day's or the manifest's name.
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| bad("cannot use the directory", &e))?
                    .with_fsync(true);
                (Arc::new(fs), "")
            }
            Self::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry);
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
                let endpoint = s3.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL")).or_else(|| env("AWS_ENDPOINT"));
                let allow_http = s3.allow_http.unwrap_or_else(|| env("AWS_ALLOW_HTTP").is_some_and(|v| v == "true"));
                if let Some(endpoint) = &endpoint {
                    if endpoint.starts_with("http://") && !allow_http {
                        return Err(ColdError::Location(format!(
                            "the S3 endpoint {endpoint} is plain HTTP; set [archive] allow_http = true (or AWS_ALLOW_HTTP=true) for a local S3-compatible server, or use https://"
                        )));
                    }
                    b = b.with_endpoint(endpoint);
                }
                b = b.with_allow_http(allow_http);
                if let Some(region) = &s3.region {
                    b = b.with_region(region);
                }
                if let Some(k) = &s3.access_key_id {
                    b = b.with_access_key_id(k.expose());
                }
                if let Some(k) = &s3.secret_access_key {
                    b = b.with_secret_access_key(k.expose());
                }
                if let Some(k) = &s3.session_token {
                    b = b.with_token(k.expose());
                }
                // Never `{b:?}`: the builder's Debug shows the secret key.
                (Arc::new(b.build().map_err(|e| bad("cannot use these S3 settings", &e))?), prefix)
            }
            Self::Gcs { bucket, prefix } => {
                let b =
                    object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket).with_retry(retry);
                (Arc::new(b.build().map_err(|e| bad("cannot use these GCS settings", &e))?), prefix)
            }
            Self::Azure { container, prefix } => {
                let b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .with_retry(retry);
                (
                    Arc::new(
                        b.build()
                            .map_err(|e| bad("cannot use these Azure settings (AZURE_STORAGE_ACCOUNT_NAME…)", &e))?,
                    ),
                    prefix,
                )
            }
        };
        Ok(Target { shown, store, prefix: prefix.to_owned() })
    }
}

/// S3 settings beside the standard `AWS_*` environment variables (which are read
/// first; these override them).
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// An S3-compatible server's address (`AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow `http://` endpoints (`AWS_ALLOW_HTTP`).
    pub allow_http: Option<bool>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

/// An opened location: where objects are read and written.
pub struct Target {
    shown: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Target").field(&self.shown).finish()
    }
}

impl Target {
    /// The location as the user wrote it (no credentials are ever part of it).
    #[must_use]
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn key(&self, relative: &str) -> Result<Key, ColdError> {
        let full = if self.prefix.is_empty() { relative.to_owned() } else { format!("{}/{relative}", self.prefix) };
        Key::parse(&full).map_err(|e| ColdError::Encode(format!("the key {full:?}: {e}")))
    }

    /// The object at `relative` (to the prefix), or `None` when there is none.
    ///
    /// # Errors
    /// [`ColdError::Denied`] or [`ColdError::Storage`].
    pub async fn get(&self, relative: &str) -> Result<Option<Bytes>, ColdError> {
        let key = self.key(relative)?;
        match self.store.get(&key).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(|e| ColdError::storage(&self.shown, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ColdError::storage(&self.shown, e)),
        }
    }

    /// Writes `bytes` at `relative`, replacing what was there in one step: a reader sees
    /// the old object or the new one, never a mixture (S3, GCS and Azure put an object
    /// atomically; a directory gets a temporary file renamed into place).
    ///
    /// # Errors
    /// [`ColdError::Denied`] or [`ColdError::Storage`].
    pub async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), ColdError> {
        let key = self.key(relative)?;
        self.store.put(&key, PutPayload::from(bytes)).await.map_err(|e| ColdError::storage(&self.shown, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_read_as_written() {
        assert_eq!(Location::parse("/var/lib/cold").unwrap(), Location::Directory("/var/lib/cold".into()));
        assert_eq!(Location::parse("cold").unwrap(), Location::Directory("cold".into()));
        assert_eq!(Location::parse("file:///var/lib/cold").unwrap(), Location::Directory("/var/lib/cold".into()));
        assert_eq!(
            Location::parse("s3://audit/tfaudit/prod/").unwrap(),
            Location::S3 { bucket: "audit".into(), prefix: "tfaudit/prod".into() }
        );
        assert_eq!(Location::parse("S3://audit").unwrap(), Location::S3 { bucket: "audit".into(), prefix: "".into() });
        assert_eq!(Location::parse("gs://b/p").unwrap(), Location::Gcs { bucket: "b".into(), prefix: "p".into() });
        assert_eq!(
            Location::parse("az://c/p/q").unwrap(),
            Location::Azure { container: "c".into(), prefix: "p/q".into() }
        );
        assert_eq!(Location::parse("s3://audit/tfaudit").unwrap().to_string(), "s3://audit/tfaudit");
        assert_eq!(
            Location::parse("cold").unwrap().relative_to(Path::new("/etc/tfaudit")),
            Location::Directory("/etc/tfaudit/cold".into())
        );
    }

    #[test]
    fn a_bad_location_is_one_line_naming_the_fix_and_never_its_credentials() {
        for (text, says) in [
            ("", "s3://bucket/prefix"),
            ("ftp://host/dir", "scheme \"ftp\" are not supported; write a directory"),
            ("https://bucket.s3.amazonaws.com/x", "s3://bucket/prefix"),
            ("s3://", "names no bucket"),
            ("s3:///prefix", "names no bucket"),
            ("s3://b/a//c", "unusable prefix"),
            ("s3://b/a/../c", "unusable prefix"),
            ("file://host/x", "file:///absolute/path"),
            ("s3://AKIAXX:COLDSECRET-1@bucket/p", "give credentials by environment"),
        ] {
            let e = Location::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains('\n') && !e.contains("COLDSECRET"), "{text}: {e}");
        }
    }

    #[test]
    fn a_plain_http_endpoint_needs_allow_http() {
        let s3 = S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            access_key_id: Some(Secret::new("AKIDCOLDTEST")),
            secret_access_key: Some(Secret::new("COLDSECRET-2")),
            ..S3Settings::default()
        };
        let location = Location::parse("s3://bucket/p").unwrap();
        let e = location.open(&s3).unwrap_err().to_string();
        assert!(e.contains("allow_http = true"), "{e}");
        let target = location.open(&S3Settings { allow_http: Some(true), ..s3.clone() }).unwrap();
        let shown = format!("{target:?} {s3:?}");
        assert!(!shown.contains("COLDSECRET"), "{shown}");
    }

    #[test]
    fn a_directory_that_cannot_be_made_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let e = Location::Directory(file.join("cold")).open(&S3Settings::default()).unwrap_err().to_string();
        assert!(e.contains("cannot create the directory") && e.contains("permissions"), "{e}");
    }

    #[tokio::test]
    async fn a_directory_reads_back_what_was_put() {
        let dir = tempfile::tempdir().unwrap();
        let target = Location::Directory(dir.path().join("new/cold")).open(&S3Settings::default()).unwrap();
        assert_eq!(target.get("manifest.json").await.unwrap(), None);
        target.put("organization=a%3Ab/date=2026-11-05/events.parquet", Bytes::from_static(b"x")).await.unwrap();
        assert!(dir.path().join("new/cold/organization=a%3Ab/date=2026-11-05/events.parquet").is_file());
        assert_eq!(
            target.get("organization=a%3Ab/date=2026-11-05/events.parquet").await.unwrap().as_deref(),
            Some(&b"x"[..])
        );
    }
}
