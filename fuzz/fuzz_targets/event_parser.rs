//! Any bytes through the event parser: an event or a reason, never a
//! panic; a parsed event survives its own JSON form unchanged.
#![no_main]

use churn::domain::event::{TimePolicy, parse_event_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = TimePolicy::at(1_780_000_000, 86_400);
    if let Ok(event) = parse_event_json(data, policy) {
        let again = parse_event_json(event.to_json().to_string().as_bytes(), policy)
            .expect("an accepted event's own JSON is accepted");
        assert_eq!(again, event);
    }
});
