//! The options of `sandpit serve`, turned into what [`crate::serve`] runs with.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::runtime_args::RuntimeArgs;
use crate::serve::ServeOptions;
use crate::sessions::SessionConfig;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SANDPIT_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Lifetime of a new session, in seconds (4 h).
    #[arg(long, env = "SANDPIT_SESSION_SECS", default_value_t = 4 * 3600)]
    session_secs: u64,
    /// Longest a session may live with extensions, in seconds (8 h).
    #[arg(long, env = "SANDPIT_SESSION_MAX_SECS", default_value_t = 8 * 3600)]
    session_max_secs: u64,
    /// Nodes per session.
    #[arg(long, env = "SANDPIT_MAX_NODES", default_value_t = 5)]
    max_nodes: usize,
    /// Live sessions per client address (a classroom behind one NAT needs a high value).
    #[arg(long, env = "SANDPIT_SESSIONS_PER_CLIENT", default_value_t = 10)]
    sessions_per_client: usize,
    /// Nodes on this host in total (default: one per 384 MiB of memory); lowered at start until
    /// the caps of all of them fit on the disk.
    #[arg(long, env = "SANDPIT_CAPACITY")]
    capacity: Option<usize>,
    /// Free space on the state directory's filesystem that nodes never get, in GiB: the node
    /// disks' caps are planned without it, and below it no node is made.
    #[arg(long, env = "SANDPIT_DISK_RESERVE_GIB", default_value_t = 4)]
    disk_reserve_gib: u64,
    /// Published ports are reachable at http://{node}-{session}-{port}.{base-domain}.
    #[arg(long, env = "SANDPIT_BASE_DOMAIN", default_value = "localhost")]
    base_domain: String,
    /// Port in the links to published ports (default: the port listened on).
    #[arg(long, env = "SANDPIT_PUBLIC_PORT")]
    public_port: Option<u16>,
    /// Bearer token of the admin routes (/api/admin/...); no token, no admin routes.
    #[arg(long, env = "SANDPIT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Origin allowed to open WebSockets besides the server's own (repeatable).
    #[arg(
        long = "allowed-origin",
        env = "SANDPIT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Origin of pages made for play-with-docker that may use this server (repeatable, e.g.
    /// https://training.example.org): they get CORS with credentials, and may use the PWD
    /// routes and WebSocket (docs/pwd.md). None by default.
    #[arg(long = "pwd-origin", env = "SANDPIT_PWD_ORIGINS", value_delimiter = ',',
          value_parser = parse_origin)]
    pwd_origins: Vec<String>,
    /// URL below which the server may fetch the compose files of stack links
    /// (`/?stack=URL`; repeatable, e.g.
    /// https://raw.githubusercontent.com/play-with-docker/stacks/). None by default: the
    /// server fetches nothing a link names.
    #[arg(long = "stack-source", env = "SANDPIT_STACK_SOURCES", value_delimiter = ',',
          value_parser = parse_source)]
    stack_sources: Vec<url::Url>,
    /// Most terminal output read per second from one node's shell, in MiB: above it the shell's
    /// writes wait, so a flood (`yes`) costs the server bounded CPU.
    #[arg(long, env = "SANDPIT_TERMINAL_READ_MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    terminal_read_mib: u64,
    /// Largest file upload, in MiB.
    #[arg(long, env = "SANDPIT_MAX_UPLOAD_MIB", default_value_t = 64)]
    max_upload_mib: usize,
    #[command(flatten)]
    pub(super) rt: RuntimeArgs,
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn parse_origin(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not an origin: {e}"))?;
    let origin = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https") || origin != s.trim_end_matches('/') {
        return Err(format!(
            "{s:?} is not an origin; give scheme, host and port only, e.g. https://training.example.org"
        ));
    }
    Ok(origin)
}

/// A stack source: an http(s) URL; its path is a prefix (a source without a path allows the
/// whole host).
fn parse_source(s: &str) -> Result<url::Url, String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        _ => Err(format!(
            "{s:?} is not an http(s) URL, e.g. https://raw.githubusercontent.com/play-with-docker/stacks/"
        )),
    }
}

/// Nodes this host can hold: one per 384 MiB of memory (an idle node with its engine uses
/// about 100 MiB; a room of learners running containers needs the rest).
fn default_capacity() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    ((total << 10) / (384 << 20)).max(1) as usize
}

impl ServeArgs {
    pub(super) fn options(&self) -> anyhow::Result<ServeOptions> {
        if self.session_secs == 0 || self.session_secs > self.session_max_secs {
            anyhow::bail!("--session-secs must be between 1 and --session-max-secs");
        }
        Ok(ServeOptions {
            listen: self.listen,
            store_path: self.rt.state_dir.join("sandpit.db"),
            sessions: SessionConfig {
                lifetime: Duration::from_secs(self.session_secs),
                max_lifetime: Duration::from_secs(self.session_max_secs),
                max_nodes: self.max_nodes,
                sessions_per_client: self.sessions_per_client,
                capacity: self.capacity.unwrap_or_else(default_capacity),
                disk_reserve_bytes: self.disk_reserve_gib << 30,
                base_domain: self.base_domain.clone(),
                // The listening port unless set (known once bound).
                public_port: self.public_port.unwrap_or(0),
                terminal: terminals::TerminalOptions {
                    read_bytes_per_sec: self.terminal_read_mib << 20,
                    ..Default::default()
                },
                stack_sources: self.stack_sources.clone(),
            },
            admin_token: self.admin_token.clone(),
            allowed_origins: self.allowed_origins.clone(),
            pwd_origins: self.pwd_origins.clone(),
            max_upload_bytes: self.max_upload_mib << 20,
            node_disk_set: self.rt.node_disk_gib.is_some(),
        })
    }
}
