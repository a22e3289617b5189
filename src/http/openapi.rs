//! `GET /api/openapi.json`: the REST API described in OpenAPI 3 (the Go MonServ had
//! Swagger). The document is a checked-in file; [`ROUTES`] lists what the router
//! serves, a unit test keeps the two equal and the suite requests every route.

use hyper::{Response, StatusCode};

use super::{json, Body};

/// The OpenAPI description (`openapi.json`, embedded compressed).
pub fn document_text() -> &'static str {
    crate::embedded::text(crate::embedded::openapi_json())
}

/// (method, path) of every route, path parameters as in the document.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/console.js"),
    ("GET", "/console.css"),
    ("GET", "/ws"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/v1/health"),
    ("GET", "/api/state"),
    ("GET", "/api/v1/servers"),
    ("GET", "/api/v1/servers/metrics"),
    ("GET", "/api/v1/alerts/active"),
    ("GET", "/api/v1/alerts/history"),
    ("GET", "/api/v1/history"),
    ("GET", "/api/v1/notify"),
    ("GET", "/metrics"),
    ("POST", "/api/test-alert"),
    ("GET", "/api/v1/silences"),
    ("POST", "/api/v1/silences"),
    ("DELETE", "/api/v1/silences/{id}"),
    ("GET", "/api/v1/rules"),
    ("PUT", "/api/v1/rules/{name}"),
    ("DELETE", "/api/v1/rules/{name}"),
    ("POST", "/api/v1/rules/{name}/backtest"),
    ("GET", "/api/v1/rules/{name}/state"),
];

pub fn document() -> Response<Body> {
    json(StatusCode::OK, document_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(document_text()).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        let mut routes: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
        // Every $ref points at something.
        let text = document_text().to_string();
        for r in text.split("\"$ref\": \"#/").skip(1) {
            let target = &r[..r.find('"').unwrap()];
            let mut node = &doc;
            for part in target.split('/') {
                node = &node[part];
            }
            assert!(!node.is_null(), "dangling $ref {target}");
        }
    }
}
