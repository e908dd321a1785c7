//! What handlers take from a request: path parameters and a strict JSON body (refused with
//! JSON errors, like everything else), the client's address, a WebSocket upgrade, and the
//! Origin check of writes and WebSockets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::ws::{self, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::state::AppState;
use crate::error::ApiError;

/// The path's parameters. axum's own refusal (a segment that is not UTF-8 once
/// percent-decoded, `/api/sessions/%ff`) is plain text; this one is a JSON error.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(params)| PathParams(params))
            .map_err(path_error)
    }
}

/// A client's malformed segment is a 400 that names the parameter; a route whose pattern does
/// not fit its handler's parameters is ours to fix.
fn path_error(e: PathRejection) -> ApiError {
    match e {
        PathRejection::FailedToDeserializePathParams(e) if e.status().is_client_error() => {
            ApiError::bad_request(format!("malformed path: {}", e.kind()))
        }
        e => {
            tracing::error!(error = %e.body_text(), "path parameters");
            ApiError::new(e.status(), "internal error; see the server log")
        }
    }
}

/// A JSON body checked strictly (unknown fields are refused); an empty body is `{}`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// A body that could not be read, as a JSON error (axum's own is plain text).
pub(super) fn body_error(e: BytesRejection) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, "the request body is too large");
    }
    ApiError::new(status, format!("read the request body: {}", e.body_text()))
}

/// A query string parsed strictly: serde's decoder turns bytes that are not UTF-8 into U+FFFD
/// without a word, so `?path=%ff` would name a file `U+FFFD`; this refuses it with a JSON
/// error, as it does every query that does not parse.
pub struct StrictQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        let spaced = raw.replace('+', " ");
        if percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .is_err()
        {
            return Err(ApiError::bad_request(
                "the query is not UTF-8 once percent-decoded",
            ));
        }
        serde_urlencoded::from_str(raw)
            .map(StrictQuery)
            .map_err(|e| ApiError::bad_request(query_error(&e.to_string())))
    }
}

/// serde's message, with a missing parameter said the way a URL carries it.
fn query_error(e: &str) -> String {
    let missing = e
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    match missing {
        Some(name) => format!("invalid query: give ?{name}=..."),
        None => format!("invalid query: {e}"),
    }
}

/// The client's address: the peer of the connection.
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ))
    }
}

/// The upgrade of a WebSocket route, or a clear error for a plain request.
pub fn need_upgrade(
    ws: Result<WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("this route is a WebSocket: {}", e.body_text()),
        )
    })
}

/// Whether a request may come from this page: no Origin (not a browser), the server's own
/// origin (same host and port), or one of the configured origins.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    origin_allowed_among(headers, &[allowed])
}

/// [`origin_allowed`] with the allowed origins in several lists.
pub fn origin_allowed_among(headers: &HeaderMap, lists: &[&[String]]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    if lists.iter().flat_map(|l| l.iter()).any(|a| a == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

pub fn check_origin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if origin_allowed(headers, &s.allowed_origins) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "requests from another origin are refused; add it with --allowed-origin",
        ))
    }
}

/// Browsers send some cross-site writes (form posts, `text/plain` bodies) without asking
/// first, so another site could make its visitors create or delete sessions. The API takes
/// writes only from the page's own origin (or `--allowed-origin`); clients that are not
/// browsers send no `Origin` and are not affected.
pub async fn same_origin_writes(
    State(s): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !read {
        check_origin(&s, req.headers())?;
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn websocket_origins() {
        let none: Vec<String> = vec![];
        assert!(origin_allowed(&headers(&[("host", "a:8080")]), &none));
        assert!(origin_allowed(
            &headers(&[("host", "a:8080"), ("origin", "http://a:8080")]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "a:8080"), ("origin", "http://evil.example")]),
            &none
        ));
        assert!(origin_allowed(
            &headers(&[("host", "a:8080"), ("origin", "https://b")]),
            &["https://b".to_string()]
        ));
    }
}
