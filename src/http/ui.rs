//! `/ui`: the dashboard, served from assets compiled into the binary (this
//! machine, and many production networks, reach no CDN). The page reads the
//! admin JSON endpoints with the token the user gives it; the assets
//! themselves are public and hold no data.
//!
//! Charts are drawn in the browser by uPlot (vendored from npm, 51 KB, MIT,
//! `ui/vendor/README`): server-side SVG with `plotters` would add a crate
//! tree to the build for pictures the browser can draw from JSON the API
//! already serves, and could not show values on hover.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
const UPLOT_JS: &str = include_str!("ui/vendor/uplot.min.js");
const UPLOT_CSS: &str = include_str!("ui/vendor/uplot.min.css");

/// Only our own origin: the page loads nothing from elsewhere, and an
/// injected script could not send data anywhere else.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Assets change with the binary: revalidate rather than serve stale code.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The dashboard page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

pub async fn uplot_js() -> Response {
    asset("text/javascript; charset=utf-8", UPLOT_JS)
}

pub async fn uplot_css() -> Response {
    asset("text/css; charset=utf-8", UPLOT_CSS)
}
