//! Log capture of replicas: one line per output line, prefixed with a UTC timestamp and
//! the stream (`2025-01-31T12:00:00.123456789Z stdout | listening on 127.0.0.1:8080`),
//! written to size-rotated files (`NAME.log`, `NAME.log.1` .. `NAME.log.{files-1}`), and
//! broadcast to followers (`service logs --follow`).
//!
//! This module writes what the child printed and nothing else: it must never add the
//! replica's environment to a log line. Lines longer than [`MAX_LINE`] are split; bytes
//! that are not UTF-8 are replaced; a last line without a newline is written when the
//! process exits. Timestamps are the time a line was read (for output buffered in a FIFO
//! while no supervisor ran, the time of adoption).

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, mpsc, watch};

use crate::error::{Error, Result};

/// The longest line kept whole; longer output is cut into pieces of this size.
pub const MAX_LINE: usize = 16 * 1024;

/// Size-based rotation: at most `files` files of at most `max_bytes` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    pub max_bytes: u64,
    pub files: usize,
}

impl Default for LogRotation {
    /// 10 MiB × 3 files.
    fn default() -> Self {
        LogRotation {
            max_bytes: 10 * 1024 * 1024,
            files: 3,
        }
    }
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One captured line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub stream: Stream,
    pub text: String,
}

impl fmt::Display for LogLine {
    /// The on-disk form: `TIMESTAMP STREAM | TEXT`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self
            .at
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.at.unix_timestamp().to_string());
        write!(f, "{at} {} | {}", self.stream.as_str(), self.text)
    }
}

/// The path of rotated file `n` (0 = the current file).
pub(crate) fn rotated(base: &Path, n: usize) -> PathBuf {
    if n == 0 {
        base.to_path_buf()
    } else {
        let mut s = base.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Error::io("open log file", path, e))
}

/// The current log file of a replica plus its rotation.
pub(crate) struct LogFile {
    base: PathBuf,
    rotation: LogRotation,
    file: File,
    size: u64,
}

impl LogFile {
    pub(crate) fn open(base: PathBuf, rotation: LogRotation) -> Result<Self> {
        let file = open_append(&base)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat log file", &base, e))?
            .len();
        Ok(LogFile {
            base,
            rotation,
            file,
            size,
        })
    }

    pub(crate) fn write_line(&mut self, line: &LogLine) -> Result<()> {
        let text = format!("{line}\n");
        let len = text.len() as u64;
        if self.size > 0 && self.size + len > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("write log file", &self.base, e))?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let keep = self.rotation.files.max(1);
        if keep == 1 {
            self.file
                .set_len(0)
                .map_err(|e| Error::io("truncate log file", &self.base, e))?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(rotated(&self.base, keep - 1));
        for n in (0..keep - 1).rev() {
            let from = rotated(&self.base, n);
            match std::fs::rename(&from, rotated(&self.base, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("rotate log file", from, e)),
            }
        }
        self.file = open_append(&self.base)?;
        self.size = 0;
        Ok(())
    }
}

/// Runs the writer of one replica: every line from `rx` goes to the file and to the
/// followers. Ends when every sender is gone.
pub(crate) async fn write_lines(
    mut file: LogFile,
    mut rx: mpsc::Receiver<LogLine>,
    followers: broadcast::Sender<LogLine>,
) {
    while let Some(line) = rx.recv().await {
        if let Err(e) = file.write_line(&line) {
            tracing::warn!(error = %e, "log write failed");
        }
        // No follower is not an error.
        let _ = followers.send(line);
    }
}

/// Reads one stream until EOF, or until `drain` turns true and nothing is left to read
/// without waiting (the read end of a FIFO never sees EOF: the child's side is opened
/// read-write so that it never gets SIGPIPE while no supervisor reads).
pub(crate) async fn pump(
    mut reader: tokio::net::unix::pipe::Receiver,
    stream: Stream,
    tx: mpsc::Sender<LogLine>,
    mut drain: watch::Receiver<bool>,
) {
    // Bounds the final drain, should something left in the group keep writing.
    const DRAIN_LIMIT: usize = 4 * 1024 * 1024;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut draining = false;
    let mut drained = 0usize;
    loop {
        if !draining && *drain.borrow() {
            draining = true;
        }
        let n = if draining {
            // What is left: read until the pipe stays empty for a moment (not `try_read`,
            // which answers WouldBlock until the reactor has seen the last readiness event
            // and would drop the process's last lines), EOF or an error.
            let n = match tokio::time::timeout(
                std::time::Duration::from_millis(100),
                reader.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => 0,
            };
            drained += n;
            if drained > DRAIN_LIMIT {
                0
            } else {
                n
            }
        } else {
            tokio::select! {
                r = reader.read(&mut buf) => r.unwrap_or(0),
                changed = drain.changed() => {
                    if changed.is_err() {
                        draining = true; // the supervisor is gone
                    }
                    continue;
                }
            }
        };
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            emit(&pending[start..end], stream, &tx).await;
            start = end + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            let rest = pending.split_off(MAX_LINE);
            emit(&pending, stream, &tx).await;
            pending = rest;
        }
    }
    if !pending.is_empty() {
        emit(&pending, stream, &tx).await;
    }
}

async fn emit(bytes: &[u8], stream: Stream, tx: &mpsc::Sender<LogLine>) {
    let text = String::from_utf8_lossy(bytes.strip_suffix(b"\r").unwrap_or(bytes)).into_owned();
    let line = LogLine {
        at: OffsetDateTime::now_utc(),
        stream,
        text,
    };
    let _ = tx.send(line).await;
}

/// The last `n` lines (in the on-disk form) across the current file and its rotations,
/// oldest first.
pub fn tail(base: &Path, n: usize, rotation: LogRotation) -> Result<Vec<String>> {
    let mut out: VecDeque<String> = VecDeque::new();
    if n == 0 {
        return Ok(Vec::new());
    }
    for k in 0..rotation.files.max(1) {
        let path = rotated(base, k);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read log file", path, e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().rev() {
            out.push_front(line.to_string());
            if out.len() == n {
                return Ok(out.into());
            }
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            at: OffsetDateTime::now_utc(),
            stream: Stream::Stdout,
            text: text.to_string(),
        }
    }

    #[test]
    fn rotates_by_size_and_tails_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("r.log");
        let rot = LogRotation {
            max_bytes: 200,
            files: 3,
        };
        let mut f = LogFile::open(base.clone(), rot).unwrap();
        for i in 0..40 {
            f.write_line(&line(&format!("line {i:03}"))).unwrap();
        }
        assert!(base.exists() && rotated(&base, 1).exists() && rotated(&base, 2).exists());
        assert!(!rotated(&base, 3).exists());
        for k in 0..3 {
            assert!(std::fs::metadata(rotated(&base, k)).unwrap().len() <= 200);
        }
        let last = tail(&base, 5, rot).unwrap();
        assert_eq!(last.len(), 5);
        assert!(last[4].ends_with("stdout | line 039"), "{last:?}");
        assert!(last[0].ends_with("stdout | line 035"), "{last:?}");
        // Spanning files: more lines than the current file holds, still in order.
        let many = tail(&base, 8, rot).unwrap();
        let nums: Vec<&str> = many.iter().map(|l| &l[l.len() - 3..]).collect();
        assert_eq!(
            nums,
            ["032", "033", "034", "035", "036", "037", "038", "039"]
        );
    }
}
