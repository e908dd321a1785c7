//! The JSON of the play-with-docker API and WebSocket (docs/pwd.md), as the PWD SDK and PWD's
//! own page read and write it. Field names are PWD's, not ours. Requests tolerate unknown
//! fields (unlike sandpit's own API): the SDK's builds differ in what they send, and a page
//! that worked against PWD must not break on one of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /`: the form of a new session.
#[derive(Debug, Default, Deserialize)]
pub struct NewSessionForm {
    /// A Go duration: `90m`, `1h30m`, `3600s`.
    #[serde(rename = "session-duration")]
    pub duration: Option<String>,
    pub stack: Option<String>,
    pub stack_name: Option<String>,
}

/// `POST /` answered to an XHR.
#[derive(Debug, Serialize)]
pub struct NewSession {
    pub session_id: String,
    /// The host (and port) to use for everything after: the SDK makes it its base URL.
    pub hostname: String,
}

/// `GET /sessions/{sid}`.
#[derive(Debug, Serialize)]
pub struct Session {
    pub id: String,
    pub created_at: String,
    pub expires_at: String,
    pub ready: bool,
    pub host: String,
    pub instances: BTreeMap<String, Instance>,
}

/// A node, as PWD called it.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub name: String,
    pub image: String,
    pub hostname: String,
    /// The node's address on its session network ("" while it is being made).
    pub ip: String,
    pub session_id: String,
    /// `{node}-{sid}`: pages open `{proxy_host}-{port}.direct.{host}` for published ports.
    pub proxy_host: String,
    pub session_host: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub tls: bool,
}

/// `POST /sessions/{sid}/instances`.
#[derive(Debug, Default, Deserialize)]
pub struct NewInstance {
    #[serde(rename = "ImageName")]
    pub image_name: Option<String>,
    #[serde(rename = "Hostname")]
    pub hostname: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `POST /sessions/{sid}/setup`.
#[derive(Debug, Default, Deserialize)]
pub struct Setup {
    #[serde(default)]
    pub instances: Vec<SetupInstance>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SetupInstance {
    /// The node's name.
    pub hostname: Option<String>,
    pub image: Option<String>,
    #[serde(default)]
    pub is_swarm_manager: bool,
    #[serde(default)]
    pub is_swarm_worker: bool,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub run: Vec<Vec<String>>,
}

/// What `/setup` did: every node's commands' exit statuses (None: timed out), in order.
#[derive(Debug, Serialize)]
pub struct SetupDone {
    pub instances: BTreeMap<String, Vec<Option<i32>>>,
}

/// `POST .../instances/{name}/exec`.
#[derive(Debug, Deserialize)]
pub struct Exec {
    pub command: Vec<String>,
}

/// The answer to an exec: the command's exit status (PWD sent no output either).
#[derive(Debug, Serialize)]
pub struct ExecDone {
    pub status_code: i32,
}

/// `GET /users/me`: everyone is the anonymous user (sandpit has no accounts).
#[derive(Debug, Serialize)]
pub struct User {
    pub id: &'static str,
    pub name: &'static str,
    pub provider: &'static str,
    pub avatar: &'static str,
    pub banned: bool,
}

pub const ANONYMOUS: User = User {
    id: "anonymous",
    name: "anonymous",
    provider: "",
    avatar: "",
    banned: false,
};

/// `GET /my/playground`: PWD's playground configuration, from this server's.
#[derive(Debug, Serialize)]
pub struct Playground {
    pub id: &'static str,
    pub domain: String,
    pub default_dind_instance_image: String,
    pub available_dind_instance_images: Vec<String>,
    pub allow_windows_instances: bool,
    /// In nanoseconds, as Go encodes a `time.Duration`.
    pub default_session_duration: u64,
}

/// One WebSocket message, both ways: `{"name": "instance terminal out", "args": [...]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub name: String,
    #[serde(default)]
    pub args: Vec<Value>,
}

impl Envelope {
    /// The text frame of an event.
    pub fn text(name: &str, args: Vec<Value>) -> String {
        let msg = Envelope {
            name: name.into(),
            args,
        };
        // A name and JSON values always serialise.
        serde_json::to_string(&msg).unwrap_or_default()
    }
}
