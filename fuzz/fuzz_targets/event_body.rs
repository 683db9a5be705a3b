//! Any bytes as a `POST /events` body: records in bounded chunks or one
//! error, never a panic; every record of an NDJSON body is a trimmed,
//! non-empty line.
#![no_main]

use churn::http::event_body::split;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let chunk = 1 + data.first().copied().unwrap_or(0) as usize % 7;
    let _ = split(data, chunk, |records| {
        assert!(!records.is_empty() && records.len() <= chunk);
        for r in &records {
            assert!(!r.payload.is_empty());
            assert_eq!(r.payload.trim_ascii().len(), r.payload.len());
        }
        true
    });
});
