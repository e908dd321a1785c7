//! Every JSON shape of the HTTP API and of a session's events socket (`docs/api.md`), in one
//! place. The page mirrors this file in `web/src/wire.ts`; the golden file `web/golden/api.json`,
//! written from these types by a test below, keeps the two from drifting (`web/build` checks
//! the TypeScript against it). Requests refuse unknown fields. The terminal protocol has its
//! own wire module, `terminals::protocol`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Lifecycle of a node as clients see it: the runtime's own (`creating -> running ->
/// destroying`, or `failed` when its PID 1 died).
pub use sandbox::NodeStatus;

/// A node's swarm role, when a template made the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "manager" => Some(Role::Manager),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// A ready swarm in one request (`provision.rs` builds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Template {
    /// One manager and one worker.
    #[serde(rename = "1m1w")]
    OneManagerOneWorker,
    /// Three managers and two workers.
    #[serde(rename = "3m2w")]
    ThreeManagersTwoWorkers,
    /// Five managers.
    #[serde(rename = "5m")]
    FiveManagers,
}

impl Template {
    pub fn name(self) -> &'static str {
        match self {
            Template::OneManagerOneWorker => "1m1w",
            Template::ThreeManagersTwoWorkers => "3m2w",
            Template::FiveManagers => "5m",
        }
    }

    /// The role of each node, in node order; the first is always a manager.
    pub fn roles(self) -> Vec<Role> {
        let (m, w) = match self {
            Template::OneManagerOneWorker => (1, 1),
            Template::ThreeManagersTwoWorkers => (3, 2),
            Template::FiveManagers => (5, 0),
        };
        std::iter::repeat_n(Role::Manager, m)
            .chain(std::iter::repeat_n(Role::Worker, w))
            .collect()
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    Expired,
    Deleted,
    Failed,
}

/// Live figures of a node.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsView {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

/// A published port and where browsers reach it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PortView {
    pub port: u16,
    pub url: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub hostname: String,
    /// None while the node is being created (or after it failed).
    pub ip: Option<Ipv4Addr>,
    pub status: NodeStatus,
    pub image: String,
    pub role: Option<Role>,
    pub ports: Vec<PortView>,
    /// None until the first sample.
    pub stats: Option<StatsView>,
    /// Path of the node's terminal WebSocket.
    pub terminal: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionView {
    pub id: String,
    pub created_at: String,
    pub expires_at: String,
    pub max_expires_at: String,
    pub template: Option<String>,
    pub max_nodes: usize,
    pub nodes: Vec<NodeView>,
}

/// A base image that nodes can be made from, with what it ships.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageView {
    pub name: String,
    /// The Debian release it is built from: `trixie`, and its point release `13.8`.
    pub debian: String,
    pub debian_version: Option<String>,
    /// Versions of the Docker engine, Compose v2 and buildx; None where the image lacks one.
    pub docker: Option<String>,
    pub compose: Option<String>,
    pub buildx: Option<String>,
}

/// `GET /api/images`: what `POST .../nodes {"image"}` accepts, and what nodes get by default.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageList {
    pub default: String,
    pub images: Vec<ImageView>,
}

/// What a session's events socket carries; the first message is always a snapshot.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Snapshot { session: SessionView },
    NodeAdded { node: NodeView },
    NodeUpdated { node: NodeView },
    NodeRemoved { name: String },
    Stats { nodes: BTreeMap<String, StatsView> },
    Progress { message: String },
    Extended { expires_at: String },
    Expiring { expires_at: String, secs_left: u64 },
    Ended { reason: EndReason },
}

/// `POST /api/sessions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub template: Option<Template>,
    pub duration_secs: Option<u64>,
    pub stack: Option<StackRequest>,
}

/// A compose file that a new session deploys as a swarm stack on its first node: fetched from
/// `url` (only below the server's `--stack-source`s) or given as `compose`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackRequest {
    pub url: Option<String>,
    pub compose: Option<String>,
    pub name: Option<String>,
}

/// `POST /api/sessions/{sid}/extend`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    pub secs: Option<u64>,
}

/// `POST /api/sessions/{sid}/nodes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNodeRequest {
    pub image: Option<String>,
    /// The node's name (and hostname); the first free `nodeN` when absent.
    pub name: Option<String>,
}

/// `POST /api/sessions/{sid}/nodes/{node}/exec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub stdin: Option<String>,
    pub timeout_secs: Option<u64>,
}

/// What a command in a node did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExecResult {
    /// The command's exit status; 128+N when signal N ended it; None when it timed out.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether stdout or stderr was cut at the output bound.
    pub truncated: bool,
    pub timed_out: bool,
}

/// `PUT .../files?path=`: where the file landed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Uploaded {
    pub path: String,
    pub size: usize,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    pub status: &'static str,
    pub sessions: usize,
    /// Nodes the runtime runs (session nodes, and any being created or left over).
    pub nodes: usize,
    pub session_nodes: usize,
    pub viewers: usize,
    pub networks: usize,
    pub session_secs: u64,
    pub max_nodes: usize,
    /// Nodes this host takes in all (`--capacity`, lowered to what the disk holds).
    pub capacity: usize,
    /// Free space on the node disks' filesystem (None: unreadable), the reserve below which
    /// no node is made, and whether it is below it now.
    pub disk_free_bytes: Option<u64>,
    pub disk_reserve_bytes: u64,
    pub disk_low: bool,
}

/// `POST /api/admin/drain`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Drained {
    pub draining: bool,
}

/// Every error answer: a 4xx or 5xx with a message for people.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod golden {
    //! Writes `web/golden/api.json` from the types above: one example of every shape (every
    //! event variant, optional fields both ways). `web/build` checks `web/src/wire.ts` against
    //! it. Run with `SANDPIT_UPDATE_GOLDEN=1` after changing a type, then update wire.ts.

    use super::*;
    use serde_json::{json, Value};

    fn to(v: impl Serialize) -> Value {
        serde_json::to_value(v).expect("serialisable")
    }

    fn stats() -> StatsView {
        StatsView {
            cpu_percent: 12.5,
            memory_bytes: 104_857_600,
            memory_limit_bytes: 2_147_483_648,
            pids: 42,
            disk_used_bytes: 1_048_576,
            disk_total_bytes: 10_737_418_240,
        }
    }

    fn port() -> PortView {
        PortView {
            port: 8080,
            url: "http://node1-0123456789abcdef0123456789abcdef-8080.localhost:8080/".into(),
            path: "/p/0123456789abcdef0123456789abcdef/node1/8080/".into(),
        }
    }

    fn running() -> NodeView {
        NodeView {
            name: "node1".into(),
            hostname: "node1".into(),
            ip: Some(Ipv4Addr::new(10, 201, 0, 2)),
            status: NodeStatus::Running,
            image: "trixie".into(),
            role: Some(Role::Manager),
            ports: vec![port()],
            stats: Some(stats()),
            terminal: "/api/sessions/0123456789abcdef0123456789abcdef/nodes/node1/terminal".into(),
        }
    }

    fn creating() -> NodeView {
        NodeView {
            name: "node2".into(),
            hostname: "node2".into(),
            ip: None,
            status: NodeStatus::Creating,
            image: "trixie".into(),
            role: None,
            ports: vec![],
            stats: None,
            terminal: "/api/sessions/0123456789abcdef0123456789abcdef/nodes/node2/terminal".into(),
        }
    }

    fn session() -> SessionView {
        SessionView {
            id: "0123456789abcdef0123456789abcdef".into(),
            created_at: "2026-12-02T10:00:00Z".into(),
            expires_at: "2026-12-02T14:00:00Z".into(),
            max_expires_at: "2026-12-02T18:00:00Z".into(),
            template: Some("1m1w".into()),
            max_nodes: 5,
            nodes: vec![running(), creating()],
        }
    }

    fn golden() -> BTreeMap<&'static str, Vec<Value>> {
        let mut plain = session();
        plain.template = None;
        plain.nodes.clear();
        let mut failed = creating();
        failed.status = NodeStatus::Failed;
        let mut worker = running();
        worker.role = Some(Role::Worker);
        let events = vec![
            Event::Snapshot { session: session() },
            Event::NodeAdded { node: creating() },
            Event::NodeUpdated { node: running() },
            Event::NodeRemoved {
                name: "node2".into(),
            },
            Event::Stats {
                nodes: BTreeMap::from([("node1".to_string(), stats())]),
            },
            Event::Progress {
                message: "swarm init on node1".into(),
            },
            Event::Extended {
                expires_at: "2026-12-02T15:00:00Z".into(),
            },
            Event::Expiring {
                expires_at: "2026-12-02T14:00:00Z".into(),
                secs_left: 300,
            },
            Event::Ended {
                reason: EndReason::Expired,
            },
            Event::Ended {
                reason: EndReason::Deleted,
            },
            Event::Ended {
                reason: EndReason::Failed,
            },
        ];
        let exec = ExecResult {
            exit_code: Some(0),
            stdout: "hello\n".into(),
            stderr: String::new(),
            truncated: false,
            timed_out: false,
        };
        let timed_out = ExecResult {
            exit_code: None,
            stdout: String::new(),
            stderr: "timed out after 5s\n".into(),
            truncated: false,
            timed_out: true,
        };
        BTreeMap::from([
            ("Session", vec![to(session()), to(plain)]),
            (
                "Node",
                vec![to(running()), to(creating()), to(failed), to(worker)],
            ),
            ("Port", vec![to(port())]),
            (
                "ImageList",
                vec![to(ImageList {
                    default: "trixie".into(),
                    images: vec![
                        ImageView {
                            name: "bookworm".into(),
                            debian: "bookworm".into(),
                            debian_version: None,
                            docker: None,
                            compose: None,
                            buildx: None,
                        },
                        ImageView {
                            name: "trixie".into(),
                            debian: "trixie".into(),
                            debian_version: Some("13.8".into()),
                            docker: Some("26.1.5".into()),
                            compose: Some("2.26.1".into()),
                            buildx: Some("0.13.1".into()),
                        },
                    ],
                })],
            ),
            ("Stats", vec![to(stats())]),
            ("SessionEvent", events.iter().map(to).collect()),
            ("ExecResult", vec![to(exec), to(timed_out)]),
            (
                "Uploaded",
                vec![to(Uploaded {
                    path: "/root/hello.txt".into(),
                    size: 5,
                })],
            ),
            (
                "ApiError",
                vec![to(ErrorBody {
                    error: "no session \"x\"".into(),
                })],
            ),
            // Requests: what the page sends; each must parse below.
            (
                "CreateSessionRequest",
                vec![
                    json!({}),
                    json!({"template": "3m2w"}),
                    json!({"template": "5m", "duration_secs": 3600}),
                    json!({"stack": {"url": "https://stacks.example.org/demo.yml", "name": "demo"}}),
                    json!({"stack": {"compose": "services:\n  web:\n    image: nginx\n"}}),
                ],
            ),
            ("ExtendRequest", vec![json!({}), json!({"secs": 3600})]),
            (
                "AddNodeRequest",
                vec![
                    json!({}),
                    json!({"image": "bookworm"}),
                    json!({"name": "manager1"}),
                ],
            ),
            (
                "ExecRequest",
                vec![
                    json!({"cmd": ["docker", "ps"]}),
                    json!({"cmd": ["cat"], "stdin": "hi", "timeout_secs": 10}),
                ],
            ),
        ])
    }

    #[test]
    fn requests_of_the_golden_file_parse() {
        let g = golden();
        let parse = |key: &str, check: &dyn Fn(Value) -> Result<(), serde_json::Error>| {
            for v in &g[key] {
                check(v.clone()).unwrap_or_else(|e| panic!("{key} {v}: {e}"));
            }
        };
        parse("CreateSessionRequest", &|v| {
            serde_json::from_value::<CreateSession>(v).map(drop)
        });
        parse("ExtendRequest", &|v| {
            serde_json::from_value::<ExtendRequest>(v).map(drop)
        });
        parse("AddNodeRequest", &|v| {
            serde_json::from_value::<AddNodeRequest>(v).map(drop)
        });
        parse("ExecRequest", &|v| {
            serde_json::from_value::<ExecRequest>(v).map(drop)
        });
    }

    #[test]
    fn golden_file_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/golden/api.json");
        let text = serde_json::to_string_pretty(&golden()).expect("serialisable") + "\n";
        if std::env::var_os("SANDPIT_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, &text).expect("write the golden file");
            return;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is not what server/src/wire.rs writes: run `SANDPIT_UPDATE_GOLDEN=1 cargo test -p \
             sandpit --lib wire` and update web/src/wire.ts to match",
            path.display()
        );
    }
}
