//! The web UI (the `web/` project, built by `scripts/build-ui.sh`), served
//! from a directory so the Rust build never needs Node: `/` is its
//! `index.html`, `/assets/*` its content-hashed files, `/ui-config.json` what
//! the UI needs to know about this deployment (where the Jaeger UI is). With
//! no build in the directory, `/` answers a page saying how to make one.
//!
//! Everything the UI loads comes from here (no CDN); the API it calls is the
//! same origin's `/v1`, so the bearer-token check stays where it is.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use imageflow_config::{ConfigError, Env, Setting};
use serde::Serialize;

pub(crate) const UI_DIR: Setting = Setting::new(
    "UI_DIR",
    UiSettings::DEFAULT_DIR,
    "the built web UI (scripts/build-ui.sh) served at /; relative to the working directory",
);
pub(crate) const JAEGER_UI_URL: Setting = Setting::described(
    "JAEGER_UI_URL",
    "unset (no trace links)",
    "Jaeger UI base URL; the web UI links each execution's trace to {url}/trace/{trace_id}",
);

/// Where the built UI lives and what it links to.
#[derive(Clone, Debug)]
pub struct UiSettings {
    /// `UI_DIR`: the output of `scripts/build-ui.sh` (`web/dist`).
    pub dir: PathBuf,
    /// `JAEGER_UI_URL`: base URL of a Jaeger UI; execution pages link
    /// `{url}/trace/{trace_id}`.
    pub jaeger_ui_url: Option<String>,
}

impl UiSettings {
    pub const DEFAULT_DIR: &'static str = "web/dist";

    /// Reads `UI_DIR` and `JAEGER_UI_URL` from `env`.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env::new(vars);
        Ok(Self {
            dir: PathBuf::from(env.text(&UI_DIR).unwrap_or_default()),
            jaeger_ui_url: env
                .url(JAEGER_UI_URL.name, &["http", "https"])?
                .map(str::to_string),
        })
    }
}

/// What `/ui-config.json` tells the UI.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UiConfig<'a> {
    version: &'static str,
    jaeger_ui_url: Option<&'a str>,
}

/// The UI's routes; merged into the API router (they sit outside `/v1`, so
/// no token is needed to load the page that asks for one).
pub fn router<S: Clone + Send + Sync + 'static>(settings: Arc<UiSettings>) -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/ui-config.json", get(config))
        .route("/assets/{*path}", get(asset))
        .with_state(settings)
}

/// The page's own policy: only this origin's scripts, styles, images (plus
/// the blob: URLs of downloaded outputs) and API.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; \
    script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

async fn index(State(settings): State<Arc<UiSettings>>) -> Response {
    let path = settings.dir.join("index.html");
    match tokio::fs::read(&path).await {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // The page names the hashed assets of one build: always revalidate it.
                (header::CACHE_CONTROL, "no-cache"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            html,
        )
            .into_response(),
        Err(err) => {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %err, "cannot read the UI's index.html");
            }
            not_built(&settings)
        }
    }
}

fn not_built(settings: &UiSettings) -> Response {
    let dir = html_escape(&settings.dir.display().to_string());
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>ImageFlowCanvas: web UI not built</title></head><body>\
<h1>The ImageFlowCanvas web UI is not built</h1>\
<p>No <code>index.html</code> in <code>{dir}</code> (the <code>UI_DIR</code> setting, \
relative to the working directory of <code>backend-api</code>).</p>\
<p>Build it with <code>scripts/build-ui.sh</code> (needs Node.js 20 and npm; it writes \
<code>web/dist</code>), or run <code>scripts/run-local.sh</code>, which builds it when it is \
missing or stale, then reload this page.</p>\
<p>The REST API is up meanwhile: <a href=\"/openapi.json\">/openapi.json</a>, \
<a href=\"/healthz\">/healthz</a>, <a href=\"/readyz\">/readyz</a>.</p></body></html>\n"
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn config(State(settings): State<Arc<UiSettings>>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(UiConfig {
            version: env!("CARGO_PKG_VERSION"),
            jaeger_ui_url: settings.jaeger_ui_url.as_deref(),
        }),
    )
        .into_response()
}

async fn asset(State(settings): State<Arc<UiSettings>>, Path(path): Path<String>) -> Response {
    let Some(relative) = safe_relative(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let file = settings.dir.join("assets").join(relative);
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&path)),
            );
            // File names carry a hash of their content.
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `path` as a relative path of plain segments: no `..`, no hidden files, no
/// separators or characters a build never writes.
fn safe_relative(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.len() > 256 {
        return None;
    }
    let ok = path.split('/').all(|segment| {
        !segment.is_empty()
            && !segment.starts_with('.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    ok.then(|| PathBuf::from(path))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::body::{Body, to_bytes};
    use tower::ServiceExt;

    use super::*;

    fn settings(dir: &std::path::Path, jaeger: Option<&str>) -> Arc<UiSettings> {
        Arc::new(UiSettings {
            dir: dir.to_path_buf(),
            jaeger_ui_url: jaeger.map(str::to_string),
        })
    }

    async fn get(router: &Router, uri: &str) -> (StatusCode, HashMap<String, String>, String) {
        let response = router
            .clone()
            .oneshot(axum::http::Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn serves_the_build_and_refuses_paths_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<html>canvas</html>").unwrap();
        std::fs::write(dir.path().join("assets/index-AbC_1.js"), "export {}").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        let router: Router = router(settings(dir.path(), Some("http://jaeger:16686")));

        let (status, headers, body) = get(&router, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "<html>canvas</html>");
        assert_eq!(headers["cache-control"], "no-cache");
        assert!(headers["content-security-policy"].contains("default-src 'self'"));

        let (status, headers, body) = get(&router, "/assets/index-AbC_1.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "export {}");
        assert!(headers["content-type"].starts_with("text/javascript"));
        assert!(headers["cache-control"].contains("immutable"));

        for bad in [
            "/assets/../secret.txt",
            "/assets/..%2Fsecret.txt",
            "/assets/.hidden",
            "/assets/missing.js",
            "/assets/a//b.js",
        ] {
            let (status, _, _) = get(&router, bad).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
        }

        let (status, _, body) = get(&router, "/ui-config.json").await;
        assert_eq!(status, StatusCode::OK);
        let config: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(config["jaegerUiUrl"], "http://jaeger:16686");
    }

    #[tokio::test]
    async fn without_a_build_the_page_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let router: Router = router(settings(&dir.path().join("dist<x>"), None));
        let (status, headers, body) = get(&router, "/").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(headers["content-type"].starts_with("text/html"));
        assert!(body.contains("scripts/build-ui.sh"), "{body}");
        assert!(body.contains("dist&lt;x&gt;"), "{body}");
        let (_, _, body) = get(&router, "/ui-config.json").await;
        assert!(body.contains("\"jaegerUiUrl\":null"), "{body}");
    }

    #[test]
    fn settings_from_env() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let defaults = UiSettings::from_env(&env(&[])).unwrap();
        assert_eq!(defaults.dir, PathBuf::from("web/dist"));
        assert_eq!(defaults.jaeger_ui_url, None);
        let set = UiSettings::from_env(&env(&[
            ("UI_DIR", "/srv/ui"),
            ("JAEGER_UI_URL", "https://jaeger.example/"),
        ]))
        .unwrap();
        assert_eq!(set.dir, PathBuf::from("/srv/ui"));
        assert_eq!(set.jaeger_ui_url.as_deref(), Some("https://jaeger.example"));
        let err = UiSettings::from_env(&env(&[("JAEGER_UI_URL", "jaeger:16686")])).unwrap_err();
        assert_eq!(err.variable, "JAEGER_UI_URL");
    }
}
