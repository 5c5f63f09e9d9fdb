//! The memory inspector: a web UI served at `/ui/` by the same binary.
//!
//! Its assets (`ui/`: one HTML page, one stylesheet, one ES module and an
//! icon; no framework and no build step) are compiled into the binary, so a fresh
//! clone serves it with nothing to install and nothing fetched from the
//! network. The page holds no data: it calls the public REST API with the
//! operator's key (kept in the tab's session storage), so it can show and do
//! only what that key may. The assets themselves are public, like
//! `/healthz`, and pass the same host/origin guard as every route.
//!
//! Every asset is sent with a content security policy that allows scripts,
//! styles and requests from this origin only (no inline script or style, no
//! third party), `nosniff`, no referrer and no framing.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::server::{ApiError, AppState};

/// The content security policy of every UI asset.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// (file name, content type, bytes) of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../ui/icon.svg"),
    ),
];

/// The UI's routes: `/ui` redirects to `/ui/`, which is the page; its
/// other assets are `/ui/<name>`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such UI asset")
            .into_response();
    };
    let mut resp = (*bytes).into_response();
    let headers = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, *content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Small files that change with the binary: revalidate every time.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// The policy forbids inline code, so the page must have none: no
    /// `<script>` without `src`, no `style=` attribute, no `on…=` handler.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(ASSETS[0].2).unwrap();
        for tag in page.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline script: <script{open}>");
        }
        assert!(!page.contains("<style"), "inline style element");
        assert!(!page.contains(" style="), "inline style attribute");
        let lower = page.to_lowercase();
        assert!(
            !lower
                .split_whitespace()
                .any(|w| w.starts_with("on") && w.contains('=')),
            "inline event handler"
        );
    }

    /// The kinds the page offers as filters are the API's.
    #[test]
    fn the_page_offers_the_apis_kinds() {
        let js = std::str::from_utf8(ASSETS.iter().find(|a| a.0 == "app.js").unwrap().2).unwrap();
        let line = js
            .lines()
            .find(|l| l.starts_with("const KINDS = ["))
            .unwrap();
        let offered: Vec<&str> = line
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|k| !k.is_empty())
            .collect();
        let kinds: Vec<&str> = hippo::MemoryKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(offered, kinds);
    }
}
