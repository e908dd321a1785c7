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
//!
//! Offline (a seeded mirror, no egress), a third registry stands in for Docker Hub itself. The
//! Docker engine asks Hub for whatever the mirror lacks, and without it `docker pull typo`
//! would end in "lookup registry-1.docker.io: no such host" instead of Docker's usual "not
//! found". So in those networks `registry-1.docker.io` resolves to the gateway, whose port 443
//! leads to a read-only registry of the same seed store, with TLS from a certificate authority
//! made for this host that signed that one name and was then thrown away; only the nodes'
//! dockerd trusts it (`SSL_CERT_DIR`), and nothing leaves the machine.
//!
//! The runtime sees the registries only through [`NodeRegistries`]. Files: `gateway.rs` (ports
//! and names on the gateway), `layout.rs` (files on disk), `process.rs` (one supervised
//! registry), `relay.rs`, `names.rs`, `error.rs`.

mod error;
mod gateway;
mod layout;
mod names;
mod process;
mod relay;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;

pub use error::RegistryError;
use gateway::{HUB_HOST, HUB_PORT};
pub use gateway::{MIRROR_PORT, PUSH_PORT, REGISTRY_HOST};
pub(crate) use layout::Layout;

use crate::config::{MirrorSource, RegistryConfig};
use crate::network::Subnet;
use process::Process;

/// What the runtime needs of the registries, and all it knows of them.
pub(crate) trait NodeRegistries: Send + Sync {
    /// The gateway TCP ports a network's nodes need open.
    fn ports(&self, egress: bool) -> Vec<u16>;
    /// The names that lead a network's nodes to their gateway.
    fn host_names(&self, egress: bool) -> Vec<&'static str>;
    /// Serves a network on its gateway until the returned value is dropped.
    fn attach<'a>(
        &'a self,
        subnet: Subnet,
        network: &'a str,
        egress: bool,
    ) -> BoxFuture<'a, Result<Attachment, RegistryError>>;
    /// Deletes what a network pushed, when the network goes.
    fn detach(&self, network: &str) -> Result<(), RegistryError>;
    /// The registry arguments of the dockerd of a node behind `gateway`.
    fn dockerd_args(&self, gateway: Ipv4Addr) -> Vec<String>;
    /// The certificate authority (PEM) a network's dockerd must trust, if any.
    fn ca(&self, egress: bool) -> Option<String>;
}

/// A network's registry service on its gateway; dropping it stops the service.
pub(crate) type Attachment = Box<dyn Send>;

/// The running registries of a runtime.
pub(crate) struct Registries {
    mirror: Process,
    push: Process,
    /// The offline stand-in for Docker Hub, and the certificate authority its nodes trust.
    hub: Option<(Process, String)>,
    /// Store of the push registry.
    push_root: PathBuf,
}

impl Registries {
    /// Starts the registries with their files in `layout`.
    pub(crate) async fn start(
        cfg: &RegistryConfig,
        layout: &Layout,
    ) -> Result<Registries, RegistryError> {
        if !cfg.exe.is_file() {
            return Err(RegistryError::MissingExe(cfg.exe.clone()));
        }
        let push_root = layout.push_store();
        let cache_root = layout.cache_store();
        for d in [layout.dir(), &push_root] {
            std::fs::create_dir_all(d).map_err(RegistryError::io("create", d))?;
        }
        let mirror_store = match &cfg.mirror {
            MirrorSource::Seeded(store) => {
                if !store.is_dir() {
                    return Err(RegistryError::MissingStore(store.clone()));
                }
                store.clone()
            }
            MirrorSource::PullThrough { .. } => {
                std::fs::create_dir_all(&cache_root)
                    .map_err(RegistryError::io("create", &cache_root))?;
                cache_root
            }
        };
        let mirror_cfg = config_yaml(&Store {
            root: &mirror_store,
            socket: &layout.files("mirror").socket,
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
            socket: &layout.files("push").socket,
            writable: true,
            secret: &random_secret(),
            proxy: None,
        });
        let mirror = Process::start(&cfg.exe, layout, "mirror", &mirror_cfg).await?;
        let push = Process::start(&cfg.exe, layout, "push", &push_cfg).await?;
        let hub = match &cfg.mirror {
            MirrorSource::Seeded(_) => {
                let tls = hub_tls(&layout.tls_dir()).await?;
                let mut hub_cfg = config_yaml(&Store {
                    root: &mirror_store,
                    socket: &layout.files("hub").socket,
                    writable: false,
                    secret: &random_secret(),
                    proxy: None,
                });
                hub_cfg.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    json_string(&tls.cert.to_string_lossy()),
                    json_string(&tls.key.to_string_lossy()),
                ));
                Some((
                    Process::start(&cfg.exe, layout, "hub", &hub_cfg).await?,
                    tls.ca_pem,
                ))
            }
            MirrorSource::PullThrough { .. } => None,
        };
        Ok(Registries {
            mirror,
            push,
            hub,
            push_root,
        })
    }

    /// The offline stand-in for Docker Hub, for a network with(out) egress.
    fn hub_for(&self, egress: bool) -> Option<&(Process, String)> {
        self.hub.as_ref().filter(|_| !egress)
    }
}

impl NodeRegistries for Registries {
    fn ports(&self, egress: bool) -> Vec<u16> {
        let mut ports = vec![PUSH_PORT, MIRROR_PORT];
        ports.extend(self.hub_for(egress).map(|_| HUB_PORT));
        ports
    }

    fn host_names(&self, egress: bool) -> Vec<&'static str> {
        let mut names = vec![REGISTRY_HOST];
        names.extend(self.hub_for(egress).map(|_| HUB_HOST));
        names
    }

    /// Starts the network's relay (`relay.rs`) on its gateway.
    fn attach<'a>(
        &'a self,
        subnet: Subnet,
        network: &'a str,
        egress: bool,
    ) -> BoxFuture<'a, Result<Attachment, RegistryError>> {
        Box::pin(async move {
            let relay = relay::start(
                subnet,
                network,
                self.mirror.socket().to_owned(),
                self.push.socket().to_owned(),
                self.hub_for(egress)
                    .map(|(p, _)| (HUB_PORT, p.socket().to_owned())),
            )
            .await?;
            Ok(Box::new(relay) as Attachment)
        })
    }

    /// Deletes the network's repositories; the blobs they alone used go at the next garbage
    /// collection.
    fn detach(&self, network: &str) -> Result<(), RegistryError> {
        let dir = layout::repositories(&self.push_root).join(names::namespace(network));
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RegistryError::io("remove", &dir)(e))
            }
            _ => Ok(()),
        }
    }

    /// The mirror on the gateway for Docker Hub images, and plain HTTP to the mirror and the
    /// session registry (they are reachable only from the session's own network).
    fn dockerd_args(&self, gateway: Ipv4Addr) -> Vec<String> {
        vec![
            format!("--registry-mirror=http://{gateway}:{MIRROR_PORT}"),
            format!("--insecure-registry={gateway}:{MIRROR_PORT}"),
            format!("--insecure-registry={REGISTRY_HOST}:{PUSH_PORT}"),
        ]
    }

    fn ca(&self, egress: bool) -> Option<String> {
        self.hub_for(egress).map(|(_, ca)| ca.clone())
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

/// A string as YAML reads it: JSON strings mean the same in YAML.
fn json_string(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The registry's configuration file; a TLS section may follow (it ends inside `http:`).
fn config_yaml(s: &Store) -> String {
    let q = json_string;
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
    if let Some((url, user, password)) = s.proxy {
        y.push_str(&format!("proxy:\n  remoteurl: {}\n", q(url)));
        if let Some(u) = user {
            y.push_str(&format!("  username: {}\n", q(u)));
        }
        if let Some(pw) = password {
            y.push_str(&format!("  password: {}\n", q(pw)));
        }
    }
    y.push_str(&format!(
        "http:\n  net: unix\n  addr: {}\n  relativeurls: true\n  secret: {}\n",
        p(s.socket),
        q(s.secret),
    ));
    y
}

/// The stand-in's certificate for Docker Hub's name.
struct HubTls {
    cert: PathBuf,
    key: PathBuf,
    ca_pem: String,
}

/// Makes (once; kept in `dir`) a certificate authority, has it sign a certificate for
/// `HUB_HOST` alone, and deletes its key, so it can never vouch for anything else.
async fn hub_tls(dir: &Path) -> Result<HubTls, RegistryError> {
    let (cert, key, ca) = (dir.join("hub.pem"), dir.join("hub.key"), dir.join("ca.pem"));
    if !(cert.is_file() && key.is_file() && ca.is_file()) {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(RegistryError::io("create", dir))?;
        let made = make_hub_cert(dir, &ca, &cert, &key).await;
        for f in ["ca.key", "hub.csr", "hub.ext"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(dir);
            return Err(e);
        }
    }
    let ca_pem = std::fs::read_to_string(&ca).map_err(RegistryError::io("read", &ca))?;
    Ok(HubTls { cert, key, ca_pem })
}

async fn make_hub_cert(
    dir: &Path,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), RegistryError> {
    let ca_key = dir.join("ca.key");
    let csr = dir.join("hub.csr");
    let ext = dir.join("hub.ext");
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:{HUB_HOST}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .map_err(RegistryError::io("write", &ext))?;
    // Fixed words, then a path, alternately: paths may hold spaces.
    let cmd = |parts: &[(&str, Option<&Path>)]| -> Vec<String> {
        let mut v = Vec::new();
        for (words, path) in parts {
            v.extend(words.split_whitespace().map(String::from));
            v.extend(path.map(|p| p.to_string_lossy().into_owned()));
        }
        v
    };
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let ca_subject = "/CN=sandpit offline Docker Hub stand-in".to_string();
    let hub_subject = format!("/CN={HUB_HOST}");
    let mut steps = [
        cmd(&[
            (&format!("req -x509 {new_key} -keyout"), Some(&ca_key)),
            ("-out", Some(ca)),
            (
                "-days 3650 -addext basicConstraints=critical,CA:TRUE,pathlen:0 \
                 -addext keyUsage=critical,keyCertSign -subj",
                None,
            ),
        ]),
        cmd(&[
            (&format!("req {new_key} -keyout"), Some(key)),
            ("-out", Some(&csr)),
            ("-subj", None),
        ]),
        cmd(&[
            ("x509 -req -days 3650 -set_serial 1 -in", Some(&csr)),
            ("-CA", Some(ca)),
            ("-CAkey", Some(&ca_key)),
            ("-extfile", Some(&ext)),
            ("-out", Some(cert)),
        ]),
    ];
    // Subjects have spaces too.
    steps[0].push(ca_subject);
    steps[1].push(hub_subject);
    for step in &steps {
        let out = tokio::process::Command::new("openssl")
            .args(step)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(RegistryError::io("run", Path::new("openssl")))?;
        if !out.status.success() {
            return Err(RegistryError::Tls(format!(
                "openssl {}: {}",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
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
    let repos = layout::repositories(store);
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
