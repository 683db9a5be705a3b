//! Splitting a `POST /events` body into raw records, a chunk at a time: a
//! JSON array (each element kept as raw text) or NDJSON (one record per
//! non-blank line). Chunks go to a callback as they fill, so a body of
//! millions of tiny records never exists as millions of records at once.

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::application::ports::RawRecord;

/// The body is neither a JSON array nor NDJSON.
#[derive(Debug, thiserror::Error)]
#[error("body is not a JSON array: {0}")]
pub struct BodyError(String);

/// Calls `emit` with successive chunks of at most `chunk` records; `emit`
/// returns false to stop early. A malformed array is refused before any
/// chunk is emitted (nothing of it is stored).
///
/// # Errors
/// [`BodyError`] when the body starts with `[` but is not one JSON array.
pub fn split(
    body: &[u8],
    chunk: usize,
    mut emit: impl FnMut(Vec<RawRecord>) -> bool,
) -> Result<(), BodyError> {
    let chunk = chunk.max(1);
    let trimmed = body.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        // Structure first, without allocating per element, so a body that
        // breaks off halfway stores nothing.
        serde_json::from_slice::<Vec<IgnoredAny>>(trimmed).map_err(|e| BodyError(e.to_string()))?;
        let mut de = serde_json::Deserializer::from_slice(trimmed);
        serde::Deserializer::deserialize_seq(
            &mut de,
            ChunkVisitor {
                chunk,
                emit: &mut emit,
            },
        )
        .map_err(|e| BodyError(e.to_string()))?;
        return Ok(());
    }
    let mut records = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        records.push(RawRecord::new(line.to_vec(), (i + 1).to_string()));
        if records.len() == chunk && !emit(std::mem::take(&mut records)) {
            return Ok(());
        }
    }
    if !records.is_empty() {
        emit(records);
    }
    Ok(())
}

struct ChunkVisitor<'f, F> {
    chunk: usize,
    emit: &'f mut F,
}

impl<'de, F: FnMut(Vec<RawRecord>) -> bool> Visitor<'de> for ChunkVisitor<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut records = Vec::new();
        let mut index = 0usize;
        while let Some(raw) = seq.next_element::<&RawValue>()? {
            records.push(RawRecord::new(
                raw.get().as_bytes().to_vec(),
                index.to_string(),
            ));
            index += 1;
            if records.len() == self.chunk && !(self.emit)(std::mem::take(&mut records)) {
                // Stopped: skip the rest without keeping it.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(());
            }
        }
        if !records.is_empty() {
            (self.emit)(records);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &[u8], chunk: usize) -> Result<Vec<Vec<(String, String)>>, BodyError> {
        let mut chunks = Vec::new();
        split(body, chunk, |c| {
            chunks.push(
                c.into_iter()
                    .map(|r| (String::from_utf8(r.payload).unwrap(), r.origin))
                    .collect(),
            );
            true
        })?;
        Ok(chunks)
    }

    #[test]
    fn arrays_keep_elements_raw_with_their_index() {
        let chunks = all(br#" [ {"a":1}, {"b" : [2,3]}, 7 ] "#, 2).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0][1], (r#"{"b" : [2,3]}"#.into(), "1".into()));
        assert_eq!(chunks[1], vec![("7".into(), "2".into())]);
    }

    #[test]
    fn ndjson_skips_blank_lines_and_numbers_lines_from_one() {
        let chunks = all(b"{\"a\":1}\n\n  \r\n{\"b\":2}\r\n", 10).unwrap();
        assert_eq!(
            chunks,
            vec![vec![
                (r#"{"a":1}"#.into(), "1".into()),
                (r#"{"b":2}"#.into(), "4".into())
            ]]
        );
    }

    #[test]
    fn a_broken_array_emits_nothing() {
        let mut emitted = 0;
        let err = split(b"[{\"a\":1},{\"b\":", 1, |_| {
            emitted += 1;
            true
        })
        .unwrap_err();
        assert_eq!(emitted, 0);
        assert!(err.to_string().contains("not a JSON array"));
        assert!(split(b"[1] trailing", 1, |_| true).is_err());
    }

    #[test]
    fn stopping_early_ends_the_split() {
        let mut seen = 0;
        split(b"1\n2\n3\n4\n", 1, |_| {
            seen += 1;
            seen < 2
        })
        .unwrap();
        assert_eq!(seen, 2);
        let mut seen = 0;
        split(b"[1,2,3,4]", 1, |_| {
            seen += 1;
            seen < 2
        })
        .unwrap();
        assert_eq!(seen, 2);
    }
}
