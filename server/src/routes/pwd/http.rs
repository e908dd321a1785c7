//! The PWD HTTP routes: each parses PWD's request, calls one `Sessions` or `provision`
//! method and answers in PWD's shape (200s where sandpit's API has 201 and 204; errors are
//! sandpit's JSON errors with PWD's statuses, e.g. 409 at the node limit).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;

use super::super::extract::{body_error, ClientAddr, JsonBody, PathParams, StrictQuery};
use super::super::nodes::read_upload;
use super::super::state::AppState;
use super::proxy_host;
use super::wire::{
    Exec, ExecDone, Instance, NewInstance, NewSession, NewSessionForm, Playground, Session, Setup,
    SetupDone, ANONYMOUS,
};
use crate::error::ApiError;
use crate::provision::{self, NodePlan};
use crate::sessions::{valid_node_name, SessionConfig, SessionError, Sessions, MIN_LIFETIME};
use crate::wire::{
    AddNodeRequest, CreateSession, ExecRequest, NodeView, Role, StackRequest, Uploaded,
};

/// The path's session and instance.
#[derive(Deserialize)]
pub struct InstancePath {
    sid: String,
    name: String,
}

/// `POST /`: a new session. An XHR (the SDK) gets its id and the host to use; a form post
/// (PWD's landing page) is sent on to the session's page.
pub async fn new_session(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let form: NewSessionForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid form: {e}")))?;
    let cfg = s.sessions.config();
    let duration_secs = match form.duration.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => Some(session_duration(d, cfg)?.as_secs()),
    };
    let stack = form
        .stack
        .filter(|u| !u.is_empty())
        .map(|url| StackRequest {
            url: Some(url),
            compose: None,
            name: form.stack_name.filter(|n| !n.is_empty()),
        });
    let req = CreateSession {
        template: None,
        duration_secs,
        stack,
    };
    let view = provision::create_session(&s.sessions, req, client).await?;
    let xhr = headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    if !xhr {
        return Ok(Redirect::to(&format!("/s/{}", view.id)).into_response());
    }
    Ok(Json(NewSession {
        session_id: view.id,
        hostname: public_host(cfg),
    })
    .into_response())
}

/// A PWD session length (a Go duration such as `90m` or `1h30m`) within this server's bounds.
fn session_duration(text: &str, cfg: &SessionConfig) -> Result<Duration, ApiError> {
    let d = go_duration(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "session-duration {text:?} is not a duration like 90m or 1h30m"
        ))
    })?;
    if d < MIN_LIFETIME || d > cfg.max_lifetime {
        return Err(ApiError::bad_request(format!(
            "session-duration must be between {}s and {}m on this server",
            MIN_LIFETIME.as_secs(),
            cfg.max_lifetime.as_secs() / 60
        )));
    }
    Ok(d)
}

/// Parses the hours, minutes and seconds of a Go duration (`2h`, `90m`, `1h30m15s`).
fn go_duration(text: &str) -> Option<Duration> {
    let mut secs: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest.as_bytes()[digits] {
            b'h' => 3600,
            b'm' => 60,
            b's' => 1,
            _ => return None,
        };
        secs = secs.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    (!text.is_empty()).then(|| Duration::from_secs(secs))
}

/// The host pages use for everything after `POST /`: the base domain, with the port unless it
/// is a scheme's own, so that `{proxy_host}-{port}.direct.{host}` reaches the port proxy.
fn public_host(cfg: &SessionConfig) -> String {
    match cfg.public_port {
        80 | 443 => cfg.base_domain.clone(),
        port => format!("{}:{port}", cfg.base_domain),
    }
}

pub async fn session(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
) -> Result<Response, ApiError> {
    let view = s.sessions.view(&sid)?;
    let host = public_host(s.sessions.config());
    let instances = view
        .nodes
        .iter()
        .map(|n| (n.name.clone(), instance(n, &view.id, &host)))
        .collect();
    Ok(Json(Session {
        id: view.id,
        created_at: view.created_at,
        expires_at: view.expires_at,
        ready: true,
        host,
        instances,
    })
    .into_response())
}

fn instance(node: &NodeView, sid: &str, host: &str) -> Instance {
    Instance {
        name: node.name.clone(),
        image: node.image.clone(),
        hostname: node.hostname.clone(),
        ip: node.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        session_id: sid.to_string(),
        proxy_host: proxy_host(&node.name, sid),
        session_host: host.to_string(),
        kind: "linux",
        tls: false,
    }
}

/// PWD's image names (`franela/dind`, ...) mean "a node with Docker": one of this server's
/// base images by its name, else the default.
fn image(
    s: &Sessions,
    name: Option<String>,
    kind: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if kind.is_some_and(|k| k.eq_ignore_ascii_case("windows")) {
        return Err(ApiError::bad_request(
            "Windows instances are not available on sandpit",
        ));
    }
    let known = s.images().images;
    Ok(name.filter(|n| known.iter().any(|i| &i.name == n)))
}

pub async fn new_instance(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
    JsonBody(req): JsonBody<NewInstance>,
) -> Result<Response, ApiError> {
    let image = image(&s.sessions, req.image_name, req.kind.as_deref())?;
    // PWD's pages ask for `node1`, `node2`, ... or names of their own; one that cannot be had
    // (not a node name, or taken) gets the next free `nodeN`, as PWD would not refuse it.
    let taken = s.sessions.view(&sid)?.nodes;
    let name = req
        .hostname
        .filter(|h| valid_node_name(h) && !taken.iter().any(|n| &n.name == h));
    let node = s
        .sessions
        .add_node(&sid, AddNodeRequest { image, name })
        .await?;
    let host = public_host(s.sessions.config());
    Ok(Json(instance(&node, &sid, &host)).into_response())
}

pub async fn delete_instance(
    State(s): State<AppState>,
    PathParams(p): PathParams<InstancePath>,
) -> Result<StatusCode, ApiError> {
    s.sessions.remove_node(&p.sid, &p.name).await?;
    Ok(StatusCode::OK)
}

/// `DELETE /sessions/{sid}` and `POST /sessions/{sid}/close` (pages send it on unload).
pub async fn close(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    s.sessions.delete(&sid).await?;
    Ok(StatusCode::OK)
}

/// `POST /sessions/{sid}/setup`: the nodes, their swarm and their `run` commands.
pub async fn setup(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
    JsonBody(req): JsonBody<Setup>,
) -> Result<Response, ApiError> {
    let plan = req
        .instances
        .into_iter()
        .map(|i| {
            let role = match (i.is_swarm_manager, i.is_swarm_worker) {
                (true, false) => Some(Role::Manager),
                (false, true) => Some(Role::Worker),
                (false, false) => None,
                (true, true) => {
                    return Err(ApiError::bad_request(
                        "an instance is a swarm manager or a worker, not both",
                    ))
                }
            };
            Ok(NodePlan {
                role,
                node: AddNodeRequest {
                    image: image(&s.sessions, i.image, i.kind.as_deref())?,
                    name: i.hostname,
                },
                run: i.run,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let runs = provision::setup(&s.sessions, &sid, &plan).await?;
    let instances = runs.into_iter().map(|r| (r.node, r.exit_codes)).collect();
    Ok(Json(SetupDone { instances }).into_response())
}

/// A command in a node; timed out (after 60 s) is status 124, as `timeout(1)` says it.
pub async fn exec(
    State(s): State<AppState>,
    PathParams(p): PathParams<InstancePath>,
    JsonBody(req): JsonBody<Exec>,
) -> Result<Response, ApiError> {
    let req = ExecRequest {
        cmd: req.command,
        stdin: None,
        timeout_secs: None,
    };
    let done = s.sessions.exec(&p.sid, &p.name, req).await?;
    Ok(Json(ExecDone {
        status_code: done.exit_code.unwrap_or(124),
    })
    .into_response())
}

#[derive(Deserialize)]
pub struct UploadQuery {
    #[serde(default)]
    path: String,
    #[serde(default)]
    url: String,
}

/// `POST .../uploads?path=`: the files of a multipart form into the directory `path` (PWD's
/// rule: relative to the shell's home, each under its own file name), or a raw body as the
/// file `path`. Fetching `?url=` for the page is not done: the server fetches nothing a
/// request names.
pub async fn upload(
    State(s): State<AppState>,
    PathParams(p): PathParams<InstancePath>,
    StrictQuery(q): StrictQuery<UploadQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    if !q.url.is_empty() {
        return Err(ApiError::bad_request(
            "uploads from a URL are not supported; send the file in the request",
        ));
    }
    s.sessions.node(&p.sid, &p.name)?;
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (parts, body) = req.into_parts();
    // Held until every file is written: at most MAX_UPLOADS bodies in memory.
    let (_permit, bytes) = read_upload(&s, body).await?;
    if !multipart {
        let done = write(&s.sessions, &p, &q.path, bytes).await?;
        return Ok(Json(vec![done]).into_response());
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("invalid multipart form: {}", e.body_text())))?;
    let mut done = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("invalid multipart form: {}", e.body_text())))?
    {
        // PWD's rule: parts without a file name are not files.
        let Some(file) = field.file_name().map(str::to_owned) else {
            continue;
        };
        if file.is_empty() || file == "." || file == ".." || file.contains(['/', '\0']) {
            return Err(ApiError::bad_request(format!(
                "{file:?} is not a file name"
            )));
        }
        let data = field
            .bytes()
            .await
            .map_err(|e| ApiError::bad_request(format!("read {file}: {}", e.body_text())))?;
        let path = match q.path.trim_end_matches('/') {
            "" if q.path.starts_with('/') => format!("/{file}"),
            "" => file,
            dir => format!("{dir}/{file}"),
        };
        done.push(write(&s.sessions, &p, &path, data).await?);
    }
    if done.is_empty() {
        return Err(ApiError::bad_request(
            "the form has no file; send it as the field `file`, with a file name",
        ));
    }
    Ok(Json(done).into_response())
}

async fn write(
    s: &Sessions,
    p: &InstancePath,
    path: &str,
    data: Bytes,
) -> Result<Uploaded, SessionError> {
    s.write_file(&p.sid, &p.name, path, async { Ok::<_, SessionError>(data) })
        .await
}

pub async fn user() -> Response {
    Json(ANONYMOUS).into_response()
}

pub async fn images(State(s): State<AppState>) -> Response {
    let names: Vec<String> = s
        .sessions
        .images()
        .images
        .into_iter()
        .map(|i| i.name)
        .collect();
    Json(names).into_response()
}

pub async fn playground(State(s): State<AppState>) -> Response {
    let cfg = s.sessions.config();
    let list = s.sessions.images();
    Json(Playground {
        id: "sandpit",
        domain: public_host(cfg),
        default_dind_instance_image: list.default,
        available_dind_instance_images: list.images.into_iter().map(|i| i.name).collect(),
        allow_windows_instances: false,
        default_session_duration: u64::try_from(cfg.lifetime.as_nanos()).unwrap_or(u64::MAX),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("1h30m15s"), Some(Duration::from_secs(5415)));
        assert_eq!(go_duration("45s"), Some(Duration::from_secs(45)));
        for bad in ["", "90", "m", "1.5h", "-1h", "1d", "1h 2m"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }
}
