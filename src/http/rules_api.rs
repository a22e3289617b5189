//! `GET /api/v1/rules`, `PUT /api/v1/rules/{name}`, `DELETE /api/v1/rules/{name}`.
//!
//! Changing rules over HTTP needs the auth token: with no `auth_token` configured,
//! PUT and DELETE answer 403 (rules are then managed through the rules directory).
//! An upload is validated exactly like a dropped-in file (compile, contract, trial
//! evaluation under the sandbox) before it is swapped in and written atomically to
//! the rules directory, so it survives a restart.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::{json, json_error, method_not_allowed, AppState, Body};
use crate::rules::loader::{builtin_threshold, valid_name, RulesDir, BUILTIN_NAME, MAX_RULE_BYTES};
use crate::rules::{RuleEngine, Source};

#[derive(Clone)]
pub struct RulesApi {
    pub engine: Arc<RuleEngine>,
    pub dir: RulesDir,
}

pub async fn handle(req: Request<Incoming>, state: &AppState) -> Response<Body> {
    let path = req.uri().path().to_string();
    let name = path.strip_prefix("/api/v1/rules").unwrap_or_default().trim_start_matches('/').to_string();
    if let Some(rule) = name.strip_suffix("/state") {
        return match req.method() {
            _ if !valid_name(rule) => {
                json_error(StatusCode::BAD_REQUEST, "rule names are 1-64 lowercase letters, digits, '-' or '_'")
            }
            &Method::GET => match state.rules.engine.rule_state(rule) {
                Some(s) => json(
                    StatusCode::OK,
                    serde_json::json!({ "success": true, "data": { "bytes": s.bytes(), "values": s.values() } })
                        .to_string(),
                ),
                None => json_error(StatusCode::NOT_FOUND, "no rule of that name has state"),
            },
            _ => method_not_allowed("GET"),
        };
    }
    if let Some(rule) = super::history_api::is_backtest(&name) {
        return match req.method() {
            _ if !valid_name(rule) => {
                json_error(StatusCode::BAD_REQUEST, "rule names are 1-64 lowercase letters, digits, '-' or '_'")
            }
            &Method::POST => super::history_api::backtest(req, rule, state).await,
            _ => method_not_allowed("POST"),
        };
    }
    match (req.method().clone(), name.is_empty()) {
        (Method::GET, true) => list(&state.rules),
        (_, true) => method_not_allowed("GET"),
        (Method::PUT | Method::DELETE, false) if state.auth_token.is_none() => json_error(
            StatusCode::FORBIDDEN,
            "changing rules over HTTP needs auth_token in the configuration; use the rules directory instead",
        ),
        (_, false) if !valid_name(&name) => {
            json_error(StatusCode::BAD_REQUEST, "rule names are 1-64 lowercase letters, digits, '-' or '_'")
        }
        (Method::PUT, false) => upload(req, &name, &state.rules).await,
        (Method::DELETE, false) => delete(&name, &state.rules).await,
        (_, false) => method_not_allowed("PUT, DELETE"),
    }
}

fn list(api: &RulesApi) -> Response<Body> {
    let rejected: Vec<serde_json::Value> = api
        .engine
        .rejected()
        .into_iter()
        .map(|(name, reason)| serde_json::json!({ "name": name, "reason": reason }))
        .collect();
    let body = serde_json::json!({
        "success": true,
        "data": {
            "rules": api.engine.status(),
            "rejected": rejected,
            "dir": api.dir.dir.display().to_string(),
            "engine": api.engine.engine_status(),
        },
    });
    json(StatusCode::OK, body.to_string())
}

async fn upload(req: Request<Incoming>, name: &str, api: &RulesApi) -> Response<Body> {
    let bytes: Bytes = match Limited::new(req.into_body(), MAX_RULE_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("rules are limited to {MAX_RULE_BYTES} bytes"))
        }
    };
    if let Some(text) = settings_text(&bytes) {
        return upload_settings(name, text, api).await;
    }
    // Reading settings and writing the file (with fsyncs) are blocking I/O.
    let (dir, rule) = (api.dir.clone(), name.to_string());
    let settings = match blocking(move || dir.settings_for(&rule)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    match api.engine.install(name, bytes.to_vec(), settings, Source::File).await {
        Ok(info) => {
            api.engine.set_rejected(name, None);
            let path = api.dir.wasm_path(name);
            let saved = blocking(move || crate::store::write_atomic(&path, &bytes).map_err(|e| e.to_string())).await;
            if let Err(e) = saved.and_then(|r| r) {
                tracing::warn!(rule = name, error = %e, "uploaded rule is running but could not be saved");
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("rule is running but was not saved: {e}"),
                );
            }
            json(StatusCode::OK, serde_json::json!({ "success": true, "data": info }).to_string())
        }
        Err(reason) => {
            let reason = reason.to_string();
            tracing::warn!(rule = name, %reason, "uploaded rule rejected; the previous version (if any) keeps running");
            json_error(StatusCode::UNPROCESSABLE_ENTITY, &format!("rule rejected: {reason}"))
        }
    }
}

/// A backtest's candidate: a component with the rule's settings file, or settings
/// (TOML) for the rule's component or as an expression rule. Checked as an upload.
pub async fn candidate(
    name: &str,
    body: Bytes,
    api: &RulesApi,
) -> Result<(Vec<u8>, crate::rules::RuleSettings), String> {
    let (dir, rule) = (api.dir.clone(), name.to_string());
    let text = settings_text(&body);
    blocking(move || match text {
        None => dir.settings_for(&rule).map(|s| (body.to_vec(), s)).map_err(|e| e.to_string()),
        Some(text) => {
            let base = if rule == BUILTIN_NAME { dir.threshold_base.clone() } else { Default::default() };
            let mut settings = crate::rules::loader::Loader::settings_from_toml(&text, &base)
                .map_err(|e| format!("{rule}.toml: {e}"))?;
            settings.file = Some((format!("{rule}.toml"), text.into()));
            match dir.code_for(&rule, &settings)? {
                Some((bytes, _)) => Ok((bytes.into_owned(), settings)),
                None => Err(format!("no rule {rule} for these settings, and no `when` condition")),
            }
        }
    })
    .await?
}

/// A body that is TOML (not a component): a settings upload.
fn settings_text(bytes: &[u8]) -> Option<String> {
    if bytes.starts_with(b"\0asm") {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    // Text that is no TOML at all is left to the component checks, which say what it
    // is; a TOML error in something with a condition is reported as such.
    (text.parse::<toml::Table>().is_ok() || crate::rules::expression::mentions_condition(text))
        .then(|| text.to_string())
}

/// `PUT` of a `.toml`: new settings for the rule of that name (its `.wasm`, or the
/// built-in), or, with a `when` and no `.wasm`, an expression rule. Validated like
/// the file in the rules directory, then saved as `<name>.toml`.
async fn upload_settings(name: &str, text: String, api: &RulesApi) -> Response<Body> {
    let (dir, rule, body) = (api.dir.clone(), name.to_string(), text.clone());
    let prepared = blocking(move || -> Result<(Vec<u8>, Source, crate::rules::RuleSettings), String> {
        let path = dir.settings_path(&rule);
        let base = if rule == BUILTIN_NAME { dir.threshold_base.clone() } else { Default::default() };
        let mut settings = crate::rules::loader::Loader::settings_from_toml(&body, &base)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        settings.file = Some((path.display().to_string(), body.into()));
        match dir.code_for(&rule, &settings)? {
            Some((bytes, source)) => Ok((bytes.into_owned(), source, settings)),
            None => Err(format!(
                "no rule {rule} to apply these settings to: upload {rule}.wasm first, or add a `when` condition to make an expression rule"
            )),
        }
    })
    .await;
    let (bytes, source, settings) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    match api.engine.install(name, bytes, settings, source).await {
        Ok(info) => {
            api.engine.set_rejected(name, None);
            let path = api.dir.settings_path(name);
            let saved =
                blocking(move || crate::store::write_atomic(&path, text.as_bytes()).map_err(|e| e.to_string())).await;
            if let Err(e) = saved.and_then(|r| r) {
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("settings are in use but were not saved: {e}"),
                );
            }
            json(StatusCode::OK, serde_json::json!({ "success": true, "data": info }).to_string())
        }
        Err(reason) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &format!("rule rejected: {reason}")),
    }
}

async fn delete(name: &str, api: &RulesApi) -> Response<Body> {
    // An expression rule is its settings file (loaded or not, parsing or not).
    let (dir, rule) = (api.dir.clone(), name.to_string());
    if blocking(move || dir.is_expression(&rule)).await.unwrap_or(false) {
        let path = api.dir.settings_path(name);
        let shown = path.display().to_string();
        let removed = blocking(move || std::fs::remove_file(&path)).await;
        if let Ok(Err(e)) = &removed {
            if e.kind() != std::io::ErrorKind::NotFound {
                return json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot delete {shown}: {e}"));
            }
        }
        api.engine.set_rejected(name, None);
        api.engine.remove(name).await;
        return json(StatusCode::OK, r#"{"success":true}"#);
    }
    let path = api.dir.wasm_path(name);
    let shown = path.display().to_string();
    let removed = blocking(move || match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot delete {shown}: {e}")),
    })
    .await;
    let had_file = match removed.and_then(|r| r) {
        Ok(had) => had,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    if name == BUILTIN_NAME && api.dir.builtin {
        if !had_file {
            return json_error(
                StatusCode::CONFLICT,
                "the built-in rule cannot be deleted; set [rules] builtin = false",
            );
        }
        // The override is gone: the built-in version takes over again.
        let (dir, rule) = (api.dir.clone(), name.to_string());
        let settings = blocking(move || dir.settings_for(&rule)).await.ok().and_then(Result::ok).unwrap_or_default();
        return match api.engine.install(name, builtin_threshold().to_vec(), settings, Source::Builtin).await {
            Ok(_) => json(StatusCode::OK, r#"{"success":true,"data":{"restored":"builtin"}}"#),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
    }
    if api.engine.remove(name).await || had_file {
        json(StatusCode::OK, r#"{"success":true}"#)
    } else {
        json_error(StatusCode::NOT_FOUND, "no such rule")
    }
}

/// Run blocking file work (reads of untrusted files, fsyncs) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("file task failed: {e}"))
}
