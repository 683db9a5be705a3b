//! The hot request, `POST /predict?user_id=ID`, answered before the router.
//!
//! Why: under load (callgrind on `churn serve`, `bench/serve.sh`), axum's
//! routing — cloning the route's boxed service, three `from_fn` layers and
//! the query extractor's error bookkeeping — cost twice the instructions of
//! the prediction and its JSON together. Only the plain form is taken here:
//! `user_id` as the only parameter (digits, or a string id that needs no
//! URL decoding: UUIDs and most names), no body, within the head limits, a
//! request permit free. It is answered by the handler's own function (a
//! prediction, or the 404 of an unknown user), and counted under the same
//! metrics. Anything else — other parameters, a
//! body, a refusal, any other error — is left to the router, which answers
//! it as it always has. The answer is the handler's own
//! ([`crate::http::predict::answer_cached`]): one `/predict`, two ways in.
//! With live features, a user whose cached row does not answer now is left
//! to the router's handler, which reads the store.

use std::time::Instant;

use axum::body::Body;
use axum::http::{Method, Request, Response};
use axum::response::IntoResponse;

use crate::domain::user::UserId;
use crate::http::AppContext;
use crate::http::intake::{MAX_HEADER_BYTES, MAX_URI_BYTES, has_body, head_bytes, uri_bytes};

/// The prediction's answer, or `None` when the router should take the
/// request (it then does every check and answers any error).
pub fn answer<B>(state: &AppContext, request: &Request<B>) -> Option<Response<Body>> {
    if request.method() != Method::POST || request.uri().path() != "/predict" {
        return None;
    }
    let user_id = plain_user_id(request.uri().query()?)?;
    let headers = request.headers();
    if has_body(headers)
        || uri_bytes(request.uri()) > MAX_URI_BYTES
        || head_bytes(headers) > MAX_HEADER_BYTES
    {
        return None;
    }
    // With a read token, only a request that carries it; the router
    // answers every refusal.
    if let Some(token) = &state.tokens.read
        && crate::http::auth::check(headers, token).is_err()
    {
        return None;
    }
    let started = Instant::now();
    // The router's in-flight limit, held while predicting as the handler
    // would hold it.
    let _permit = state.in_flight.try_acquire().ok()?;
    // The handler's own answer: same use case, same JSON, same headers.
    let response = match crate::http::predict::answer_cached(state, &user_id)? {
        Ok(json) => json.into_response(),
        // An id without features is an ordinary answer under real traffic
        // (new users, typos): answered here too, as the handler answers
        // it, rather than predicted a second time by the router.
        Err(e) if e.error_type == "unknown_user" => e.into_response(),
        Err(_) => return None,
    };
    crate::http::metrics::record(
        "/predict",
        &Method::POST,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    Some(response)
}

/// The id from a query that is exactly `user_id=ID`, `ID` free of URL
/// escapes (`%`, `+`) and separators, so that its text is what the router
/// would decode; the router takes everything else.
fn plain_user_id(query: &str) -> Option<UserId> {
    let text = query.strip_prefix("user_id=")?;
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':'))
    {
        return None;
    }
    UserId::parse(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_plain_query_is_taken() {
        assert_eq!(plain_user_id("user_id=42"), Some(UserId::Int(42)));
        assert_eq!(plain_user_id("user_id=0042"), Some(UserId::Int(42)));
        let uuid = "550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(
            plain_user_id(&format!("user_id={uuid}")),
            Some(UserId::parse(uuid).unwrap())
        );
        assert_eq!(
            plain_user_id("user_id=-1"),
            Some(UserId::parse("-1").unwrap())
        );
        for other in [
            "user_id=",
            "user_id=4%32",
            "user_id=a+b",
            "user_id=42&explain=true",
            "explain=true&user_id=42",
            "user_id=42&",
            "user_id=+42",
            "userid=42",
        ] {
            assert_eq!(plain_user_id(other), None, "{other}");
        }
    }
}
