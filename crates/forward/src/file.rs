//! `type = "file"`: JSON lines, one file per UTC day of the events, for any log
//! shipper to tail. A batch is appended and synced to disk before the cursor moves.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use tfaudit_config::SinkSection;

use crate::{Batch, Delivered, SendError, Sink, SinkFuture};

/// The file sink's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// The path, with `%Y`, `%m`, `%d` (and `%%`) still in it.
    pub path: String,
}

impl FileConfig {
    /// # Errors
    /// A path that is empty or has a `%` directive other than `%Y`, `%m`, `%d`, `%%`.
    pub fn from_section(section: &SinkSection, base: &Path) -> Result<Self, String> {
        let name = &section.name;
        let written = section.path.as_deref().unwrap_or_default().trim();
        if written.is_empty() {
            return Err(format!("sink {name:?} (file) needs path"));
        }
        let mut chars = written.chars();
        while let Some(c) = chars.next() {
            if c == '%' && !matches!(chars.next(), Some('Y' | 'm' | 'd' | '%')) {
                return Err(format!("sink {name:?}: path {written:?} may only use %Y, %m, %d and %%"));
            }
        }
        let path = if Path::new(written).is_absolute() {
            written.to_owned()
        } else {
            base.join(written).display().to_string()
        };
        Ok(Self { path })
    }

    /// The file for an event stamped `at`.
    #[must_use]
    pub fn path_for(&self, at: Timestamp) -> PathBuf {
        let day = at.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
        let mut out = String::with_capacity(self.path.len() + 8);
        let mut chars = self.path.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('Y') => out.push_str(&format!("{:04}", day.year())),
                Some('m') => out.push_str(&format!("{:02}", day.month())),
                Some('d') => out.push_str(&format!("{:02}", day.day())),
                _ => out.push('%'),
            }
        }
        PathBuf::from(out)
    }
}

/// Appends batches to the day's file.
pub struct FileSink {
    config: FileConfig,
}

impl FileSink {
    #[must_use]
    pub fn new(config: FileConfig) -> Self {
        Self { config }
    }
}

impl Sink for FileSink {
    fn send<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a, Result<Delivered, SendError>> {
        // Grouped here, written on the blocking pool: file writes and fsync block.
        let mut groups: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for e in &batch.events {
            let path = self.config.path_for(e.timestamp);
            if groups.last().is_none_or(|(p, _)| *p != path) {
                groups.push((path, Vec::new()));
            }
            let buf = &mut groups.last_mut().expect("just pushed").1;
            buf.extend_from_slice(e.line.as_bytes());
            buf.push(b'\n');
        }
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                for (path, bytes) in groups {
                    append(&path, &bytes)
                        .map_err(|e| SendError::Retry { error: format!("{}: {e}", path.display()), after: None })?;
                }
                Ok(Delivered::all())
            })
            .await
            .unwrap_or_else(|e| Err(SendError::Retry { error: format!("the file writer failed: {e}"), after: None }))
        })
    }

    fn health(&self) -> SinkFuture<'_, Result<(), String>> {
        let path = self.config.path_for(Timestamp::now());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                open_for_append(&path).map(|_| ()).map_err(|e| format!("{}: {e}", path.display()))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        })
    }
}

fn open_for_append(path: &Path) -> std::io::Result<(std::fs::File, bool)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let existed = path.exists();
    let file = std::fs::OpenOptions::new().read(true).append(true).create(true).open(path)?;
    Ok((file, !existed))
}

/// Appends `bytes` and syncs them to disk. A line cut short by a crash belongs to a
/// batch whose cursor never moved (it is being sent again), so it is dropped first:
/// the file stays one whole event per line. The file is locked meanwhile: the
/// forwarder and a checkpoint's copy (`[integrity] checkpoint_sink`) may append at
/// once, and one's line being written must not look cut short to the other.
fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (mut file, created) = open_for_append(path)?;
    file.lock()?;
    let whole = whole_lines_length(&mut file)?;
    if whole < file.metadata()?.len() {
        tracing::warn!(file = %path.display(), "dropping a line cut short by an earlier crash; its batch is being written again");
        file.set_len(whole)?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    if created && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The new file's name must survive a power loss as well as its content.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The length of the file up to and including its last line break.
fn whole_lines_length(file: &mut std::fs::File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = usize::try_from(end - start).expect("at most the chunk's length");
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(at) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn section(path: &str) -> SinkSection {
        let text = format!("[[sink]]\nname = \"f\"\ntype = \"file\"\npath = {path:?}\n");
        tfaudit_config::ConfigFile::parse(Path::new("t.toml"), &text).unwrap().sinks.remove(0)
    }

    #[test]
    fn days_and_bad_directives() {
        let c = FileConfig::from_section(&section("/l/%Y-%m-%d.jsonl"), Path::new("/base")).unwrap();
        assert_eq!(c.path_for("2026-03-04T23:59:59Z".parse().unwrap()), PathBuf::from("/l/2026-03-04.jsonl"));
        let c = FileConfig::from_section(&section("rel/%Y/100%%.jsonl"), Path::new("/base")).unwrap();
        assert_eq!(c.path_for("2026-03-04T00:00:00Z".parse().unwrap()), PathBuf::from("/base/rel/2026/100%.jsonl"));
        let e = FileConfig::from_section(&section("/l/%H.jsonl"), Path::new("/")).unwrap_err();
        assert!(e.contains("%Y, %m, %d"), "{e}");
    }

    #[tokio::test]
    async fn appends_whole_lines_and_drops_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("out/%Y-%m-%d.jsonl");
        let sink = FileSink::new(FileConfig::from_section(&section(template.to_str().unwrap()), dir.path()).unwrap());
        let event = |seq: i64, ts: &str, raw: &str| Event::from_json(seq, "e", ts.parse().unwrap(), raw);
        let batch = Batch::new(
            "f",
            vec![
                event(1, "2026-03-04T10:00:00Z", r#"{"id":"a"}"#),
                event(2, "2026-03-05T10:00:00Z", "{\"id\":\n\"b\"}"),
            ],
        );
        sink.send(&batch).await.unwrap();
        let day1 = dir.path().join("out/2026-03-04.jsonl");
        let day2 = dir.path().join("out/2026-03-05.jsonl");
        std::fs::OpenOptions::new().append(true).open(&day1).unwrap().write_all(b"{\"id\":\"tor").unwrap();
        let again = Batch::new("f", vec![event(3, "2026-03-04T11:00:00Z", r#"{"id":"c"}"#)]);
        sink.send(&again).await.unwrap();
        assert_eq!(std::fs::read_to_string(day1).unwrap(), "{\"id\":\"a\"}\n{\"id\":\"c\"}\n");
        assert_eq!(std::fs::read_to_string(day2).unwrap(), "{\"id\": \"b\"}\n");
        sink.health().await.unwrap();
    }
}
