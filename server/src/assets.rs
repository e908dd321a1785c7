//! The page: the built web assets (`web/dist`, made by `web/build`) served over HTTP.
//!
//! Release builds embed `web/dist` into the binary (rust-embed), so a deployed server is one
//! file plus its base image; debug builds read the same directory from disk on every request,
//! so `web/build` and a reload are enough while working on the page. A build without
//! `web/dist` still compiles: the page then answers 503 and says to run `web/build`.
//!
//! Routes: `/` and `/s/{sid}` get `index.html` (the page routes on the client; the session id
//! in the URL is the capability, checked by the API, not here), `/assets/{file}` the rest.
//! Names are not content-hashed, so every answer carries `Cache-Control: no-cache` and an
//! `ETag`: browsers revalidate and get a 304 when nothing changed.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "../web/dist/"]
#[allow_missing = true]
struct Dist;

const INDEX: &str = "index.html";

/// What the page may load: only its own origin (WebSockets included), inline styles for
/// xterm.js, and no framing (the terminals take keystrokes).
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
    style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Routes of the page, to merge into the app.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/s/{sid}", get(index))
        .route("/assets/{*file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(INDEX, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(name: &str, req: &HeaderMap) -> Response {
    let Some(file) = Dist::get(name) else {
        return if Dist::get(INDEX).is_none() {
            not_built()
        } else {
            (StatusCode::NOT_FOUND, "no such file\n").into_response()
        };
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let mut res = if if_none_match(req, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let ok = res.status() == StatusCode::OK;
    let h = res.headers_mut();
    if ok {
        h.insert(
            header::CONTENT_TYPE,
            content_type(name, file.metadata.mimetype()),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if name == INDEX {
        // The URL is the capability: never send it to the sites that port links open.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    res
}

fn not_built() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CACHE_CONTROL, "no-store")],
        "the web page is not built: run web/build (and, for a release binary, \
         cargo build --release again to embed it)\n",
    )
        .into_response()
}

/// Whether the client's cached copy (`If-None-Match`) is this one.
fn if_none_match(req: &HeaderMap, etag: &str) -> bool {
    req.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

fn content_type(name: &str, guessed: &str) -> HeaderValue {
    let text = guessed.starts_with("text/")
        || guessed == "application/javascript"
        || guessed == "image/svg+xml"
        || guessed == "application/json";
    let value = if text && !guessed.contains("charset") {
        format!("{guessed}; charset=utf-8")
    } else {
        guessed.to_owned()
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| {
        tracing::warn!(file = name, mime = guessed, "unusable content type");
        HeaderValue::from_static("application/octet-stream")
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request to a router served on a loopback port: (status, head, body).
    async fn request(path: &str, extra: &str) -> (u16, String, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router::<()>()).await.unwrap();
        });
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await.unwrap();
        server.abort();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        (status, head, raw[split + 4..].to_vec())
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    }

    #[tokio::test]
    async fn serves_the_page_or_says_to_build_it() {
        let built = Dist::get(INDEX).is_some();
        for path in ["/", "/s/0123456789abcdef0123456789abcdef"] {
            let (status, head, body) = request(path, "").await;
            if built {
                assert_eq!(status, 200, "{path}");
                assert_eq!(
                    header(&head, "content-type"),
                    Some("text/html; charset=utf-8")
                );
                assert_eq!(header(&head, "cache-control"), Some("no-cache"));
                assert_eq!(header(&head, "referrer-policy"), Some("no-referrer"));
                assert!(String::from_utf8_lossy(&body).contains("/assets/app.js"));
            } else {
                assert_eq!(status, 503, "{path}");
                assert!(String::from_utf8_lossy(&body).contains("web/build"));
            }
        }
        let (status, _, _) = request("/assets/no-such-file.js", "").await;
        assert_eq!(status, if built { 404 } else { 503 });
    }

    #[tokio::test]
    async fn assets_revalidate_with_etags() {
        let (status, head, body) = request("/assets/app.js", "").await;
        if Dist::get("app.js").is_none() {
            assert_eq!(status, 503, "web/dist is not built: the page must say so");
            return;
        }
        assert_eq!(status, 200);
        assert!(header(&head, "content-type")
            .unwrap()
            .contains("javascript"));
        assert!(!body.is_empty());
        let etag = header(&head, "etag").unwrap().to_owned();
        let (status, _, body) =
            request("/assets/app.js", &format!("If-None-Match: {etag}\r\n")).await;
        assert_eq!(status, 304);
        assert!(body.is_empty());
    }

    #[test]
    fn etags_match_plain_weak_lists_and_star() {
        let mut h = HeaderMap::new();
        assert!(!if_none_match(&h, "\"ab\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"ab\""),
        );
        assert!(if_none_match(&h, "\"ab\""));
        assert!(!if_none_match(&h, "\"cd\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, "\"cd\""));
    }

    #[test]
    fn text_types_say_utf8() {
        assert_eq!(
            content_type("app.js", "text/javascript"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("a.png", "image/png"), "image/png");
        assert_eq!(
            content_type("x", "text/html; charset=utf-8"),
            "text/html; charset=utf-8"
        );
    }
}
