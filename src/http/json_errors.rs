//! JSON bodies for the answers hyper writes on its own. A request hyper
//! cannot parse (garbage request line, head over its buffer, URI over its
//! limit) never reaches the router: hyper writes a bare `400`/`431`/`414`
//! head with `content-length: 0` and closes. This connection wrapper
//! recognises exactly that head and adds the JSON error body every other
//! answer carries.
//!
//! Hand-written because hyper offers no hook for these answers. Only an
//! error head with an empty body is touched: the router's own errors
//! always carry a JSON body, so they never match.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An I/O stream whose bare error heads get a JSON body.
pub struct JsonErrors<S> {
    inner: S,
    /// A rewritten answer still to be written.
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonErrors<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The JSON answer for a bare error head, if `buf` is one.
pub fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    let status = buf.strip_prefix(b"HTTP/1.1 ")?;
    let code = std::str::from_utf8(status.get(..3)?).ok()?;
    if !(code.starts_with('4') || code.starts_with('5')) {
        return None;
    }
    // Head only: the buffer ends where the head does.
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<&str> = lines.collect();
    if !headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let (error_type, message) = match code {
        "414" => ("uri_too_long", "request URI too long"),
        "431" => ("headers_too_large", "request headers too large"),
        "408" => ("request_timeout", "request not received in time"),
        _ => ("bad_request", "malformed HTTP request"),
    };
    let body = serde_json::json!({
        "error": message,
        "error_type": error_type,
        "detail": null,
    })
    .to_string();
    let mut out = String::with_capacity(buf.len() + body.len() + 64);
    out.push_str(status_line);
    out.push_str("\r\n");
    for h in headers {
        if h.eq_ignore_ascii_case("content-length: 0") {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("content-type: application/json\r\n");
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes what is pending; Ready once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    // Not vectored, so hyper flattens each answer's head into one buffer
    // that `rewrite` can recognise.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(answer) = rewrite(buf) {
            self.pending = answer;
            self.written = 0;
            // The caller's bytes are taken; the rest goes out on flush.
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_error_heads_get_a_json_body() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(!head.contains("content-length: 0"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error_type"], "headers_too_large");
    }

    #[test]
    fn answers_with_bodies_and_successes_pass_untouched() {
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(
            rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}").is_none(),
            "head and body in one buffer"
        );
        assert!(rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-length: 20\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
    }

    #[tokio::test]
    async fn the_rewritten_answer_reaches_the_peer_whole() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(16);
        let mut w = JsonErrors::new(a);
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let writer = tokio::spawn(async move {
            w.write_all(head).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = String::new();
        b.read_to_string(&mut got).await.unwrap();
        writer.await.unwrap();
        let (_, body) = got.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error_type"], "bad_request", "{got}");
    }
}
