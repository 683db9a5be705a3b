//! Bearer tokens: the admin token (`/admin/*`), the ingest write key
//! (`POST /events`, as Segment's and RudderStack's write keys) and the read
//! token (`/predict`, `/predict/batch`). Each is optional; a configured one
//! is compared in constant time.
//!
//! The header is read strictly, so what a proxy or a client library sends
//! means one thing: exactly one `Authorization` header (two are refused,
//! not "the first wins"), the scheme `Bearer` in any case, one space, and a
//! token without surrounding whitespace (`Bearer TOKEN ` is not `TOKEN`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::error::ApiError;

/// Why a request's credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Repeated,
    Wrong,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing bearer token (Authorization: Bearer <token>)",
            Self::Malformed => {
                "malformed Authorization header: expected exactly \"Bearer <token>\""
            }
            Self::Repeated => "more than one Authorization header",
            Self::Wrong => "wrong bearer token",
        }
    }
}

/// The bearer token of `headers`, read strictly (module doc).
///
/// # Errors
/// Why there is no usable token.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(Refusal::Missing)?;
    if values.next().is_some() {
        return Err(Refusal::Repeated);
    }
    let value = value.to_str().map_err(|_| Refusal::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Refusal::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.bytes().any(|b| b.is_ascii_whitespace())
    {
        return Err(Refusal::Malformed);
    }
    Ok(token)
}

/// Whether `headers` carry `expected` (constant time in the token).
///
/// # Errors
/// Why they do not.
pub fn check(headers: &HeaderMap, expected: &SecretString) -> Result<(), Refusal> {
    let presented = bearer(headers)?;
    // ct_eq is constant-time for equal lengths; the length is not secret
    // enough to matter, and unequal lengths compare false.
    if bool::from(
        presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes()),
    ) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

/// The 401 of a refusal.
pub fn unauthorized(refusal: Refusal) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", refusal.message())
}

/// A configured token, `None` when the setting is empty.
pub fn configured(token: &SecretString) -> Option<SecretString> {
    let t = token.expose_secret();
    (!t.is_empty()).then(|| SecretString::from(t.to_string()))
}

/// `POST /events` with `server.ingest_token` set: only with it.
pub async fn require_ingest_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.tokens.ingest {
        check(request.headers(), token).map_err(unauthorized)?;
    }
    Ok(next.run(request).await)
}

/// `/predict*` with `server.predict_token` set: only with it.
pub async fn require_read_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.tokens.read {
        check(request.headers(), token).map_err(unauthorized)?;
    }
    Ok(next.run(request).await)
}

/// The optional tokens of the data routes.
#[derive(Default)]
pub struct Tokens {
    /// `server.ingest_token`.
    pub ingest: Option<SecretString>,
    /// `server.predict_token`.
    pub read: Option<SecretString>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_header_is_read_strictly() {
        let secret = SecretString::from("s3cret".to_string());
        assert_eq!(check(&headers(&["Bearer s3cret"]), &secret), Ok(()));
        assert_eq!(check(&headers(&["bearer s3cret"]), &secret), Ok(()));
        assert_eq!(check(&headers(&[]), &secret), Err(Refusal::Missing));
        assert_eq!(
            check(&headers(&["Bearer s3cret "]), &secret),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            check(&headers(&["Bearer  s3cret"]), &secret),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            check(&headers(&["Basic s3cret"]), &secret),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            check(&headers(&["Bearer "]), &secret),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            check(&headers(&["Bearer s3cret", "Bearer other"]), &secret),
            Err(Refusal::Repeated)
        );
        assert_eq!(
            check(&headers(&["Bearer other", "Bearer s3cret"]), &secret),
            Err(Refusal::Repeated)
        );
        assert_eq!(
            check(&headers(&["Bearer s3cre"]), &secret),
            Err(Refusal::Wrong)
        );
    }
}
