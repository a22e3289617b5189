//! The built-in web page: a live dashboard fed by `/ws`, shipped inside the binary.
//! It builds the DOM with `textContent` only: host names, mountpoints and command
//! lines come from monitored hosts and are untrusted.

use hyper::{Response, StatusCode};

use super::Body;

pub fn index() -> Response<Body> {
    let mut r = Response::new(Body::new(crate::embedded::page_html().into()));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        hyper::header::HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        ),
    );
    r
}
