//! `GET /`: the web page for people who don't use curl, and the security headers every gateway answer carries.
//!
//! The page is three static files compiled into the binary (`functions/gateway/web/`): no build step, no
//! Node at run time. It talks to the same JSON API as everyone else (`/login`, `/upload`, `/jobs`…), keeps
//! the JWT in `sessionStorage` (never in a URL or a cookie, so there is no CSRF surface), and runs under a
//! Content-Security-Policy that allows only its own script and stylesheet.

use std::hash::{DefaultHasher, Hash, Hasher};

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

/// The page's Content-Security-Policy (CSP Level 3): its own script, stylesheet and API only; no inline
/// code, no framing, no plugins, no `<base>` tricks. Also sent with every API answer (harmless there, and a
/// JSON body opened in a browser can then run nothing).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The headers set on every answer (unless a handler set its own), as `(name, value)`.
///
/// - `Content-Security-Policy`: [`CONTENT_SECURITY_POLICY`];
/// - `X-Content-Type-Options: nosniff` (a stored file is never sniffed into HTML by a browser);
/// - `X-Frame-Options: DENY` (for browsers without `frame-ancestors`);
/// - `Referrer-Policy: no-referrer`;
/// - `Permissions-Policy`: no camera, microphone, geolocation, payment or USB;
/// - `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Resource-Policy: same-origin`.
pub const SECURITY_HEADERS: [(&str, &str); 7] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");
const ICON_SVG: &str = include_str!("../web/icon.svg");

/// Adds [`SECURITY_HEADERS`] to every answer of `router`, plus `Strict-Transport-Security` (one year) when
/// the gateway is reached over HTTPS (`public_base_url` starts with `https://`).
pub fn with_security_headers(mut router: Router, public_base_url: &str) -> Router {
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    if public_base_url.starts_with("https://") {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    router
}

/// The page's routes: `GET /` (HTML) and `GET /assets/{app.js,app.css,icon.svg}`.
///
/// `max_upload_bytes` is written into the page so it can refuse a too-large file before sending a byte.
/// Every file is served with a strong `ETag` and `Cache-Control: no-cache`, so a browser revalidates
/// (304) and never runs a stale script after an upgrade.
pub fn routes<S: Clone + Send + Sync + 'static>(max_upload_bytes: u64) -> Router<S> {
    let index = INDEX_HTML.replace("{{MAX_UPLOAD_BYTES}}", &max_upload_bytes.to_string());
    let files = [
        ("/", "text/html; charset=utf-8", index),
        (
            "/assets/app.js",
            "text/javascript; charset=utf-8",
            APP_JS.to_owned(),
        ),
        (
            "/assets/app.css",
            "text/css; charset=utf-8",
            APP_CSS.to_owned(),
        ),
        ("/assets/icon.svg", "image/svg+xml", ICON_SVG.to_owned()),
    ];
    let mut router = Router::new();
    for (path, content_type, body) in files {
        let asset = StaticAsset::new(content_type, body);
        router = router.route(
            path,
            get(move |headers: HeaderMap| async move { asset.serve(&headers) }),
        );
    }
    router
}

/// One embedded file with its validator.
#[derive(Clone)]
struct StaticAsset {
    content_type: &'static str,
    etag: HeaderValue,
    body: bytes::Bytes,
}

impl StaticAsset {
    fn new(content_type: &'static str, body: String) -> Self {
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
            .expect("a quoted hex string is a valid header value");
        Self {
            content_type,
            etag,
            body: body.into(),
        }
    }

    /// 304 when `If-None-Match` names the current version (RFC 9110 §13.1.2), else 200 with the body.
    fn serve(&self, headers: &HeaderMap) -> Response {
        let cache = [
            (header::ETAG, self.etag.clone()),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ];
        let fresh = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == self.etag
            });
        if fresh {
            return (StatusCode::NOT_MODIFIED, cache).into_response();
        }
        (
            cache,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            )],
            self.body.clone(),
        )
            .into_response()
    }
}
