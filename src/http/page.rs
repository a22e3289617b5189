//! The operator console (`src/http/console/`): one HTML page, its stylesheet and its
//! script, built into the binary gzip-compressed and sent as they are. No inline
//! script or style, so the Content-Security-Policy allows nothing but this origin:
//! a host name that smuggled markup in could not run anything even if the page
//! ever rendered it as HTML (it renders every host-controlled string as text).

use hyper::header::{HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use hyper::{HeaderMap, Response, StatusCode};

use super::{json_error, Body};
use crate::embedded::console;

/// The console's policy: scripts, styles and connections (`/ws`, the REST API) from
/// this origin only; no frames, plugins, form posts or base-URL tricks.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/`, `/console.css` or `/console.js`; None for any other path.
pub fn asset(path: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    let (bytes, kind) = match path {
        "/" | "/index.html" => (console::INDEX_HTML, "text/html; charset=utf-8"),
        "/console.css" => (console::CONSOLE_CSS, "text/css; charset=utf-8"),
        "/console.js" => (console::CONSOLE_JS, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    let listed = headers.contains_key(ACCEPT_ENCODING);
    let is_page = matches!(path, "/" | "/index.html");
    // Browsers ask for gzip. The page goes plain to anything else (curl, Python's
    // urllib, scripts reading it); the script and stylesheet are only for browsers.
    let gzip = accepts_gzip(headers) && (listed || !is_page);
    let body = match (gzip, is_page) {
        (true, _) => bytes,
        (false, true) => crate::embedded::index_html(),
        (false, false) => {
            return Some(json_error(
                StatusCode::NOT_ACCEPTABLE,
                "the console's files are sent gzip-compressed; use a browser (or curl --compressed)",
            ))
        }
    };
    let mut r = Response::new(Body::new(bytes::Bytes::from_static(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    if gzip {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    // A new monserv version must not run with the old script: revalidate each time
    // (it is small, and the appliance is on the same network).
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(hyper::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(hyper::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(hyper::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(hyper::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(r)
}

/// RFC 9110 12.5.3: no `Accept-Encoding` at all means any coding is acceptable; one
/// that lists codings must list gzip (or `*`) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut listed = false;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            listed = true;
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q <= 0.0)
            });
            if (coding == "gzip" || coding == "x-gzip" || coding == "*") && !refused {
                return true;
            }
        }
    }
    !listed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn gzip_is_acceptable_unless_refused() {
        assert!(accepts_gzip(&with(None)));
        assert!(accepts_gzip(&with(Some("gzip, deflate, br, zstd"))));
        assert!(accepts_gzip(&with(Some("br;q=1.0, GZIP;q=0.5"))));
        assert!(accepts_gzip(&with(Some("*"))));
        assert!(!accepts_gzip(&with(Some("identity"))));
        assert!(!accepts_gzip(&with(Some("gzip;q=0, br"))));
        assert!(!accepts_gzip(&with(Some("br"))));
    }

    #[test]
    fn assets_have_their_types_and_the_policy() {
        let h = with(Some("gzip"));
        for (path, kind) in [("/", "text/html"), ("/console.js", "text/javascript"), ("/console.css", "text/css")] {
            let r = asset(path, &h).unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert!(r.headers()[CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}");
            assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
            assert!(!CSP.contains("unsafe"), "no unsafe-inline or unsafe-eval");
        }
        assert!(asset("/console.map", &h).is_none());
        for plain in [asset("/", &with(Some("identity"))).unwrap(), asset("/", &with(None)).unwrap()] {
            assert_eq!(plain.status(), StatusCode::OK);
            assert!(plain.headers().get(CONTENT_ENCODING).is_none());
        }
        assert_eq!(asset("/console.js", &with(None)).unwrap().headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(asset("/console.js", &with(Some("identity"))).unwrap().status(), StatusCode::NOT_ACCEPTABLE);
    }
}
