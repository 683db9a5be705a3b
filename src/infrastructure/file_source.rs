//! NDJSON event sources and the rejects file: what `churn ingest FILE`
//! reads from and writes bad lines to.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::application::ports::{DeadLetterSink, EventSource, RawRecord, SourceError};
use crate::domain::event::EventError;

/// Reads one JSON object per line from a file or stdin. Blank lines are
/// skipped; every other line becomes a record whose origin is its line number.
pub struct NdjsonSource {
    reader: Box<dyn AsyncBufRead + Send + Unpin>,
    name: String,
    line_no: u64,
    buf: Vec<u8>,
}

impl NdjsonSource {
    /// Opens `path`, or stdin when it is `-`.
    ///
    /// # Errors
    /// [`SourceError::Io`] if the file cannot be opened.
    pub async fn open(path: &Path) -> Result<Self, SourceError> {
        let (reader, name): (Box<dyn AsyncBufRead + Send + Unpin>, String) =
            if path == Path::new("-") {
                (Box::new(BufReader::new(tokio::io::stdin())), "stdin".into())
            } else {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| SourceError::Io(format!("cannot open {}: {e}", path.display())))?;
                (
                    Box::new(BufReader::with_capacity(1 << 20, file)),
                    path.display().to_string(),
                )
            };
        Ok(Self {
            reader,
            name,
            line_no: 0,
            buf: Vec::new(),
        })
    }
}

#[async_trait]
impl EventSource for NdjsonSource {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<RawRecord>, SourceError> {
        let mut out = Vec::with_capacity(max.min(65_536));
        while out.len() < max {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .await
                .map_err(|e| SourceError::Io(format!("{}: {e}", self.name)))?;
            if n == 0 {
                break;
            }
            self.line_no += 1;
            let line = self.buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            out.push(RawRecord::new(
                line.to_vec(),
                format!("{}:{}", self.name, self.line_no),
            ));
        }
        Ok(out)
    }
}

/// Appends rejected records to an NDJSON file, one object per line:
/// `{"origin":..., "field":..., "error":..., "line":...}`.
pub struct RejectsFile {
    path: PathBuf,
    writer: Option<BufWriter<tokio::fs::File>>,
    count: u64,
}

impl RejectsFile {
    /// The file is created lazily, on the first reject.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            writer: None,
            count: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

#[async_trait]
impl DeadLetterSink for RejectsFile {
    async fn reject(&mut self, record: &RawRecord, error: &EventError) -> Result<(), SourceError> {
        if self.writer.is_none() {
            if let Some(dir) = self.path.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| SourceError::Io(e.to_string()))?;
            }
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(|e| {
                    SourceError::Io(format!("cannot open {}: {e}", self.path.display()))
                })?;
            self.writer = Some(BufWriter::new(file));
        }
        let line = serde_json::json!({
            "origin": record.origin,
            "field": error.field(),
            "error": error.to_string(),
            "line": String::from_utf8_lossy(&record.payload),
        });
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        if let Some(w) = self.writer.as_mut() {
            w.write_all(&bytes)
                .await
                .map_err(|e| SourceError::Io(e.to_string()))?;
        }
        self.count += 1;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()
                .await
                .map_err(|e| SourceError::Io(e.to_string()))?;
        }
        Ok(())
    }
}
