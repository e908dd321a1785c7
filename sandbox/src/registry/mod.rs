//! Images inside nodes: the host's registries and how nodes reach them.
//!
//! Two `docker-registry` processes (Debian's distribution registry) run for the owner of a
//! state directory, each on a unix socket under `<state>/registry/`:
//! - the **mirror**, which every node's dockerd uses as `registry-mirrors`, so `docker pull
//!   nginx` needs no flags. Offline it serves the seed images (`ops/seed/publish` builds its
//!   store; read-only); in production it can be a pull-through cache of Docker Hub instead.
//! - the **push registry**, where nodes push under `registry:5000/<name>`; each session network
//!   has its own namespace in it, so sessions never see each other's pushes.
//!
//! Nodes reach both through a per-network relay on their gateway (`relay.rs`), the only host
//! address the node firewall lets them talk to.

mod names;
mod process;
mod relay;

use std::path::{Path, PathBuf};

pub(crate) use relay::Relay;

use crate::network::Subnet;
use process::Process;

/// The session registry's port on the gateway, where `registry:PUSH_PORT/<name>` goes.
pub const PUSH_PORT: u16 = 5000;
/// The mirror's port on the gateway (each node's dockerd knows it; users need not).
pub const MIRROR_PORT: u16 = 5001;
/// The name of the session registry inside the nodes (DNS and `/etc/hosts`).
pub const REGISTRY_HOST: &str = "registry";

/// Where the images of nodes come from.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The distribution registry binary (Debian's `docker-registry` package).
    pub exe: PathBuf,
    pub mirror: MirrorSource,
}

/// What the mirror serves.
#[derive(Debug, Clone)]
pub enum MirrorSource {
    /// The seed images in a registry store built by `ops/seed/publish`, read-only.
    Seeded(PathBuf),
    /// A pull-through cache of an upstream registry (Docker Hub in production), cached in the
    /// state directory, with optional credentials to lift the anonymous rate limit.
    PullThrough {
        upstream: String,
        username: Option<String>,
        password: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the registry binary {} is missing: install Debian's docker-registry package (ops/setup does)",
        .0.display()
    )]
    MissingExe(PathBuf),
    #[error(
        "no seed image store at {}: build it with ops/seed/publish (ops/setup does), or make \
         the mirror a pull-through cache",
        .0.display()
    )]
    MissingStore(PathBuf),
    #[error("the registry did not listen on {}; its log ends with:\n{log_tail}", socket.display())]
    NotListening { socket: PathBuf, log_tail: String },
    #[error("start the registry relay on {gateway}: {source}")]
    Relay {
        gateway: std::net::Ipv4Addr,
        source: std::io::Error,
    },
}

/// The running registries of a runtime.
pub(crate) struct Registries {
    mirror: Process,
    push: Process,
    /// Store of the push registry.
    push_root: PathBuf,
}

impl Registries {
    /// Starts both registries with their files in `dir` (the runtime's `<state>/registry`).
    pub(crate) async fn start(
        cfg: &RegistryConfig,
        dir: &Path,
    ) -> Result<Registries, RegistryError> {
        if !cfg.exe.is_file() {
            return Err(RegistryError::MissingExe(cfg.exe.clone()));
        }
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |e| RegistryError::Io {
                what,
                path,
                source: e,
            }
        };
        let push_root = dir.join("push");
        let cache_root = dir.join("cache");
        for d in [dir, &push_root] {
            std::fs::create_dir_all(d).map_err(io("create", d))?;
        }
        let mirror_store = match &cfg.mirror {
            MirrorSource::Seeded(store) => {
                if !store.is_dir() {
                    return Err(RegistryError::MissingStore(store.clone()));
                }
                store.clone()
            }
            MirrorSource::PullThrough { .. } => {
                std::fs::create_dir_all(&cache_root).map_err(io("create", &cache_root))?;
                cache_root
            }
        };
        let mirror_cfg = config_yaml(&Store {
            root: &mirror_store,
            socket: &process::socket_path(dir, "mirror"),
            writable: matches!(cfg.mirror, MirrorSource::PullThrough { .. }),
            secret: &random_secret(),
            proxy: match &cfg.mirror {
                MirrorSource::Seeded(_) => None,
                MirrorSource::PullThrough {
                    upstream,
                    username,
                    password,
                } => Some((upstream, username.as_deref(), password.as_deref())),
            },
        });
        let push_cfg = config_yaml(&Store {
            root: &push_root,
            socket: &process::socket_path(dir, "push"),
            writable: true,
            secret: &random_secret(),
            proxy: None,
        });
        let mirror = Process::start(&cfg.exe, dir, "mirror", &mirror_cfg).await?;
        let push = Process::start(&cfg.exe, dir, "push", &push_cfg).await?;
        Ok(Registries {
            mirror,
            push,
            push_root,
        })
    }

    /// Starts the relay of a session network on its gateway.
    pub(crate) async fn relay(
        &self,
        subnet: Subnet,
        network: &str,
    ) -> Result<Relay, RegistryError> {
        relay::start(
            subnet,
            network,
            self.mirror.socket().to_owned(),
            self.push.socket().to_owned(),
        )
        .await
        .map_err(|e| RegistryError::Relay {
            gateway: subnet.gateway(),
            source: e,
        })
    }

    /// Deletes what a session network pushed (its repositories; the blobs they alone used go
    /// at the next garbage collection).
    pub(crate) fn forget(&self, network: &str) -> Result<(), RegistryError> {
        let dir = self
            .push_root
            .join("docker/registry/v2/repositories")
            .join(names::namespace(network));
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RegistryError::Io {
                what: "remove",
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// The storage and listener of one registry process.
struct Store<'a> {
    root: &'a Path,
    socket: &'a Path,
    writable: bool,
    secret: &'a str,
    /// Upstream URL, user name and password of a pull-through cache.
    proxy: Option<(&'a str, Option<&'a str>, Option<&'a str>)>,
}

/// The registry's configuration file. Strings are written as JSON strings, which YAML reads
/// with the same meaning.
fn config_yaml(s: &Store) -> String {
    let q = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let p = |v: &Path| q(&v.to_string_lossy());
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {}\n",
        p(s.root),
        s.writable,
    );
    if !s.writable {
        y.push_str(
            "  maintenance:\n    readonly:\n      enabled: true\n    uploadpurging:\n      enabled: false\n",
        );
    }
    // Relative URLs: a Location header must not name the unix socket's fake host.
    y.push_str("catalog:\n  maxentries: 100000\n");
    y.push_str(&format!(
        "http:\n  net: unix\n  addr: {}\n  relativeurls: true\n  secret: {}\n",
        p(s.socket),
        q(s.secret),
    ));
    if let Some((url, user, password)) = s.proxy {
        y.push_str(&format!("proxy:\n  remoteurl: {}\n", q(url)));
        if let Some(u) = user {
            y.push_str(&format!("  username: {}\n", q(u)));
        }
        if let Some(pw) = password {
            y.push_str(&format!("  password: {}\n", q(pw)));
        }
    }
    y
}

/// The secret a registry signs upload state with.
fn random_secret() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `name:tag` of every image in a registry store (for `sandpit doctor`).
pub fn store_images(store: &Path) -> Vec<String> {
    let repos = store.join("docker/registry/v2/repositories");
    let mut out = Vec::new();
    let mut stack = vec![(repos.clone(), String::new())];
    while let Some((dir, name)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if file == "_manifests" {
                if let Ok(tags) = std::fs::read_dir(e.path().join("tags")) {
                    for t in tags.flatten() {
                        out.push(format!("{name}:{}", t.file_name().to_string_lossy()));
                    }
                }
            } else if !file.starts_with('_') && e.path().is_dir() {
                let sub = if name.is_empty() {
                    file
                } else {
                    format!("{name}/{file}")
                };
                stack.push((e.path(), sub));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_mirror_is_read_only_and_a_cache_names_its_upstream() {
        let seeded = config_yaml(&Store {
            root: Path::new("/var/lib/sandpit/images/registry"),
            socket: Path::new("/s/mirror.sock"),
            writable: false,
            secret: "x",
            proxy: None,
        });
        assert!(seeded.contains("rootdirectory: \"/var/lib/sandpit/images/registry\"\n"));
        assert!(seeded.contains("readonly:\n      enabled: true"));
        assert!(seeded.contains("net: unix\n  addr: \"/s/mirror.sock\"\n  relativeurls: true"));
        assert!(!seeded.contains("proxy:"));

        let cache = config_yaml(&Store {
            root: Path::new("/c"),
            socket: Path::new("/s/m.sock"),
            writable: true,
            secret: "x",
            proxy: Some(("https://registry-1.docker.io", Some("me"), Some("p\"w"))),
        });
        assert!(!cache.contains("readonly"));
        assert!(cache.contains(
            "proxy:\n  remoteurl: \"https://registry-1.docker.io\"\n  username: \"me\"\n  password: \"p\\\"w\"\n"
        ));
    }

    #[test]
    fn store_images_lists_names_and_tags() {
        let dir = crate::testdir::TempDir::new("store-images");
        let repos = dir.0.join("docker/registry/v2/repositories");
        for (name, tag) in [
            ("library/nginx", "latest"),
            ("library/nginx", "bookworm"),
            ("a/b/c", "1"),
        ] {
            std::fs::create_dir_all(repos.join(name).join("_manifests/tags").join(tag)).unwrap();
            std::fs::create_dir_all(repos.join(name).join("_layers")).unwrap();
        }
        assert_eq!(
            store_images(&dir.0),
            ["a/b/c:1", "library/nginx:bookworm", "library/nginx:latest"]
        );
    }
}
