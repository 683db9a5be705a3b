//! File event sources (NDJSON, CSV/TSV with a header) and the rejects
//! file: what `churn ingest FILE` reads from and writes bad lines to.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::application::ports::{DeadLetterSink, EventSource, RawRecord, SourceError};
use crate::domain::event::EventError;

/// The formats `churn ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Ndjson,
    Csv,
    Tsv,
}

impl FileFormat {
    /// From the file's extension: `.csv`, `.tsv`/`.tab`, else NDJSON.
    pub fn of(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Self::Csv,
            Some("tsv" | "tab") => Self::Tsv,
            _ => Self::Ndjson,
        }
    }
}

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
/// `{"origin":..., "field":..., "error":..., "line":...}`, keeping at most
/// `sample_per_reason` lines per field at fault in one run (a fully
/// rejected million-line file costs a few hundred lines, not its size
/// again), and ends each run with one summary line holding the exact count
/// per field: `{"summary":{"source":...,"rejected":N,"by_field":{...},
/// "sampled":M}}`.
pub struct RejectsFile {
    path: PathBuf,
    writer: Option<BufWriter<tokio::fs::File>>,
    sample_per_reason: u64,
    by_field: std::collections::BTreeMap<&'static str, u64>,
    count: u64,
    sampled: u64,
}

impl RejectsFile {
    /// The file is created lazily, on the first reject.
    pub fn new(path: PathBuf, sample_per_reason: u64) -> Self {
        Self {
            path,
            writer: None,
            sample_per_reason,
            by_field: Default::default(),
            count: 0,
            sampled: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every reject of this run (sampled or not).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Lines written to the file this run.
    pub fn sampled(&self) -> u64 {
        self.sampled
    }

    async fn write_line(&mut self, line: serde_json::Value) -> Result<(), SourceError> {
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
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        if let Some(w) = self.writer.as_mut() {
            w.write_all(&bytes)
                .await
                .map_err(|e| SourceError::Io(e.to_string()))?;
        }
        Ok(())
    }

    /// Appends the run's summary line (when anything was rejected) and
    /// flushes.
    ///
    /// # Errors
    /// [`SourceError::Io`] when the file cannot be written.
    pub async fn finish(&mut self, source: &str) -> Result<(), SourceError> {
        if self.count > 0 {
            let line = serde_json::json!({
                "summary": {
                    "source": source,
                    "rejected": self.count,
                    "by_field": self.by_field,
                    "sampled": self.sampled,
                    "sample_per_reason": self.sample_per_reason,
                }
            });
            self.write_line(line).await?;
        }
        self.flush().await
    }
}

#[async_trait]
impl DeadLetterSink for RejectsFile {
    async fn reject(&mut self, record: &RawRecord, error: &EventError) -> Result<(), SourceError> {
        self.count += 1;
        let seen = self.by_field.entry(error.field()).or_insert(0);
        *seen += 1;
        if *seen > self.sample_per_reason {
            return Ok(());
        }
        self.sampled += 1;
        let line = serde_json::json!({
            "origin": record.origin,
            "field": error.field(),
            "error": error.to_string(),
            "line": String::from_utf8_lossy(&record.payload),
        });
        self.write_line(line).await
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

/// Reads a CSV file (or stdin) with a header row; each row becomes a
/// record whose payload is a JSON object keyed by the header (empty cells
/// left out), so the same field mapping reads NDJSON and CSV. Rows are read
/// on a blocking thread, a chunk at a time, two chunks ahead at most.
pub struct CsvSource {
    rows: tokio::sync::mpsc::Receiver<Result<Vec<RawRecord>, SourceError>>,
    pending: std::collections::VecDeque<RawRecord>,
    done: bool,
    header: Vec<String>,
}

/// Rows per chunk handed from the reading thread.
const CSV_CHUNK_ROWS: usize = 8_192;

impl CsvSource {
    /// Opens `path` (stdin for `-`) and reads its header.
    ///
    /// # Errors
    /// [`SourceError::Io`] if the file cannot be opened or has no header.
    pub fn open(path: &Path, delimiter: u8) -> Result<Self, SourceError> {
        let (input, name): (Box<dyn std::io::Read + Send>, String) = if path == Path::new("-") {
            (Box::new(std::io::stdin()), "stdin".into())
        } else {
            let file = std::fs::File::open(path)
                .map_err(|e| SourceError::Io(format!("cannot open {}: {e}", path.display())))?;
            (
                Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
                path.display().to_string(),
            )
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .from_reader(input);
        let header: Vec<String> = reader
            .byte_headers()
            .map_err(|e| SourceError::Io(format!("{name}: cannot read the CSV header: {e}")))?
            .iter()
            // A BOM from spreadsheet exports is not part of the first name.
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_string()
            })
            .collect();
        if header.iter().all(String::is_empty) {
            return Err(SourceError::Io(format!("{name}: the CSV header is empty")));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let keys = header.clone();
        std::thread::spawn(move || read_rows(reader, &keys, &name, &tx));
        Ok(Self {
            rows: rx,
            pending: Default::default(),
            done: false,
            header,
        })
    }

    /// The header's column names.
    pub fn header(&self) -> &[String] {
        &self.header
    }
}

fn read_rows(
    mut reader: csv::Reader<Box<dyn std::io::Read + Send>>,
    keys: &[String],
    name: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<RawRecord>, SourceError>>,
) {
    let mut chunk = Vec::with_capacity(CSV_CHUNK_ROWS);
    // Bytes, not strings: a cell in another encoding is kept (lossily)
    // rather than stopping the file.
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, csv::Position::line);
                let mut obj = serde_json::Map::with_capacity(keys.len());
                for (i, value) in record.iter().enumerate() {
                    let value = String::from_utf8_lossy(value);
                    let value = value.trim();
                    if value.is_empty() {
                        continue;
                    }
                    // Cells past the header are kept under their position.
                    let key = match keys.get(i) {
                        Some(k) if !k.is_empty() => k.clone(),
                        _ => format!("column_{}", i + 1),
                    };
                    obj.insert(key, serde_json::Value::String(value.to_string()));
                }
                chunk.push(RawRecord::new(
                    serde_json::Value::Object(obj).to_string().into_bytes(),
                    format!("{name}:{line}"),
                ));
                if chunk.len() == CSV_CHUNK_ROWS
                    && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(SourceError::Io(format!("{name}: {e}"))));
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
}

#[async_trait]
impl EventSource for CsvSource {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<RawRecord>, SourceError> {
        while self.pending.len() < max && !self.done {
            match self.rows.recv().await {
                Some(Ok(rows)) => self.pending.extend(rows),
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
        let n = max.min(self.pending.len());
        Ok(self.pending.drain(..n).collect())
    }
}
