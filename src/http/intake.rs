//! Request intake, before any handler or in-flight permit: bounds the URI
//! and head, then reads the body under a deadline and a server-wide byte
//! budget. A slow or huge upload therefore holds no request permit while it
//! trickles in, costs memory only for bytes actually received, and the sum
//! of bodies held at once is bounded.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::telemetry::metric_names;

/// Longest request target answered normally (URI with query).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest request head (all header names and values) answered normally.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The body limits shared by every request.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    pub max_body_bytes: usize,
    pub read_timeout: Duration,
}

impl BodyBudget {
    pub fn new(max_in_flight: usize, max_body_bytes: usize, read_timeout: Duration) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
            max_body_bytes,
            read_timeout,
        }
    }
}

fn refused(status: StatusCode, reason: &'static str, message: String) -> ApiError {
    metrics::counter!(metric_names::HTTP_REQUESTS_REFUSED_TOTAL, "reason" => reason).increment(1);
    ApiError::new(status, reason, message)
}

/// Whether a request with these headers announces a body.
pub fn has_body(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// The request target's length (path and query), as bounded by
/// [`MAX_URI_BYTES`].
pub fn uri_bytes(uri: &axum::http::Uri) -> usize {
    uri.path_and_query().map_or(0, |p| p.as_str().len())
}

/// The head's size (every header name and value), as bounded by
/// [`MAX_HEADER_BYTES`].
pub fn head_bytes(headers: &axum::http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// Bytes of a body reserved from the budget, returned when dropped.
struct Held {
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        metrics::gauge!(metric_names::HTTP_BODY_BYTES_IN_FLIGHT).decrement(self.bytes as f64);
    }
}

impl Held {
    fn take(&mut self, budget: &BodyBudget, n: usize) -> Result<(), ApiError> {
        let overloaded = || {
            refused(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "too many request bodies in flight; retry shortly".to_string(),
            )
        };
        let n32 = u32::try_from(n).map_err(|_| overloaded())?;
        let more = budget
            .bytes
            .clone()
            .try_acquire_many_owned(n32)
            .map_err(|_| overloaded())?;
        match &mut self.permit {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
        self.bytes += n;
        metrics::gauge!(metric_names::HTTP_BODY_BYTES_IN_FLIGHT).increment(n as f64);
        Ok(())
    }
}

async fn read_body(
    budget: &BodyBudget,
    body: Body,
    held: &mut Held,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "body larger than {} bytes (server.max_body_bytes); split it into smaller requests",
                budget.max_body_bytes
            ),
        )
    };
    let mut body = body;
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + budget.read_timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(refused(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "body not received within {} s (server.body_read_timeout_secs)",
                        budget.read_timeout.as_secs()
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // The body extractor's own limit surfaces as an error too.
                return Err(ApiError::bad_request(format!("cannot read body: {e}")));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len() + data.len() > budget.max_body_bytes {
            return Err(too_large());
        }
        held.take(budget, data.len())?;
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Bounds the head, reads the body within the budget, then runs the rest.
pub async fn intake(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let uri_len = uri_bytes(request.uri());
    if uri_len > MAX_URI_BYTES {
        return Err(refused(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("request URI of {uri_len} bytes; at most {MAX_URI_BYTES}"),
        ));
    }
    let header_bytes = head_bytes(request.headers());
    if header_bytes > MAX_HEADER_BYTES {
        return Err(refused(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers of {header_bytes} bytes; at most {MAX_HEADER_BYTES}"),
        ));
    }
    if !has_body(request.headers()) {
        return Ok(next.run(request).await);
    }
    let budget = &state.body_budget;
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > budget.max_body_bytes as u64) {
        return Err(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "body larger than {} bytes (server.max_body_bytes); split it into smaller requests",
                budget.max_body_bytes
            ),
        ));
    }
    let (parts, body) = request.into_parts();
    let mut held = Held {
        permit: None,
        bytes: 0,
    };
    let bytes = read_body(budget, body, &mut held).await?;
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // The body (and what the handler built from it) is gone by now.
    drop(held);
    Ok(response)
}
