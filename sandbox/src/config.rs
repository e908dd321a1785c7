//! Runtime configuration: where the runtime keeps its state, how it names what it creates on
//! the host, and the default limits of a node.
//!
//! Every host object the runtime makes (bridges, veths, cgroups, firewall chains, uid ranges,
//! files) carries `prefix` in its name or lives under `state_dir`, so that several instances
//! (and parallel test runs) can share one machine. Kernel paths are fields too, so pure logic
//! can be tested without a kernel.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::network::Subnet;

/// How a node is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Root inside maps to an unprivileged host uid range of the node's own; the base image is
    /// an idmapped, read-only lower layer. The default.
    Userns,
    /// Root inside is host root, fenced by namespaces and a devices-cgroup allow-list. A fallback
    /// for kernels without idmapped mounts; `docker run --privileged` does not work inside.
    Rootful,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "userns" => Ok(Self::Userns),
            "rootful" => Ok(Self::Rootful),
            other => Err(format!(
                "unknown isolation mode {other:?}: use \"userns\" or \"rootful\""
            )),
        }
    }
}

/// What to do with nodes found on disk whose creating process is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrphanPolicy {
    /// Live nodes are taken over; dead ones are cleaned up.
    Adopt,
    /// Every node found on disk is destroyed.
    Destroy,
}

impl std::str::FromStr for OrphanPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "adopt" => Ok(Self::Adopt),
            "destroy" => Ok(Self::Destroy),
            other => Err(format!(
                "unknown orphan policy {other:?}: use \"adopt\" or \"destroy\""
            )),
        }
    }
}

/// Resource limits of one node, enforced by its cgroup and its disk image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeLimits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// CPU time as a number of cores (CFS quota); 0 means no quota.
    pub cpus: f64,
    /// Size cap of everything the node writes: its root's upper layer and `/var/lib/docker`
    /// (one sparse ext4 image).
    pub disk_bytes: u64,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            pids: 2048,
            cpus: 1.0,
            disk_bytes: 10 << 30,
        }
    }
}

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

/// Configuration of a [`crate::Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Short name put on every host object: `[a-z][a-z0-9]{0,7}`.
    pub prefix: String,
    /// Node and network state; node directories live below it.
    pub state_dir: PathBuf,
    /// Base images: `<images_dir>/<name>/rootfs`.
    pub images_dir: PathBuf,
    pub default_image: String,
    /// Mount point of the cgroup v1 hierarchies.
    pub cgroup_root: PathBuf,
    /// Cgroup below which every node gets its own (default: the prefix).
    pub cgroup_parent: String,
    /// Addresses for session networks; each network takes one `network_prefix_len` subnet.
    pub subnet_pool: Subnet,
    pub network_prefix_len: u8,
    /// The lock file every instance on the host takes around choosing a network's subnet and
    /// creating its bridge, so two instances never pick the same free one.
    pub network_lock: PathBuf,
    /// Host uids for user namespaces: ranges of 65536 from `uid_pool_start`, at most
    /// `uid_pool_ranges` of them. Claimed with lock files in `uid_lock_dir`, shared by every
    /// instance on the host.
    pub uid_pool_start: u32,
    pub uid_pool_ranges: u32,
    pub uid_lock_dir: PathBuf,
    pub isolation: Isolation,
    pub limits: NodeLimits,
    /// Give nodes a default route and NAT to the outside. Off by default and in every test.
    pub egress: bool,
    /// The registries nodes pull from and push to; None: nodes have none.
    pub registry: Option<RegistryConfig>,
    pub orphans: OrphanPolicy,
    /// The `sandpit` binary, re-executed for the in-node init and for exec.
    pub helper_exe: PathBuf,
}

impl RuntimeConfig {
    /// Defaults for a production host; tests override `prefix`, `state_dir`, `subnet_pool`.
    pub fn new(helper_exe: PathBuf) -> Self {
        Self {
            prefix: "sandpit".into(),
            state_dir: "/var/lib/sandpit/state".into(),
            images_dir: "/var/lib/sandpit/images".into(),
            default_image: "trixie".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_parent: "sandpit".into(),
            subnet_pool: Subnet::new(Ipv4Addr::new(10, 201, 0, 0), 16),
            network_prefix_len: 24,
            network_lock: crate::network::host::default_lock_path(),
            uid_pool_start: 1_000_000,
            uid_pool_ranges: 16_000,
            uid_lock_dir: "/run/sandpit/uid-ranges".into(),
            isolation: Isolation::Userns,
            limits: NodeLimits::default(),
            egress: false,
            registry: None,
            orphans: OrphanPolicy::Adopt,
            helper_exe,
        }
    }

    /// Checks the parts that name host objects.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.prefix;
        let ok = !p.is_empty()
            && p.len() <= 8
            && p.starts_with(|c: char| c.is_ascii_lowercase())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            return Err(format!(
                "prefix {p:?} is not valid: use 1 to 8 characters a-z0-9, starting with a letter"
            ));
        }
        // A /30 is the smallest network: the bridge and one node.
        if self.network_prefix_len < self.subnet_pool.prefix_len() || self.network_prefix_len > 30 {
            return Err(format!(
                "network prefix length /{} does not fit the subnet pool {}",
                self.network_prefix_len, self.subnet_pool
            ));
        }
        crate::network::check_link_names(p, self.subnet_pool, self.network_prefix_len)
            .map_err(|e| e.to_string())?;
        if self.cgroup_parent.is_empty() || self.cgroup_parent.contains("..") {
            return Err(format!(
                "cgroup parent {:?} is not valid",
                self.cgroup_parent
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        let mut c = RuntimeConfig::new("/bin/true".into());
        assert!(c.validate().is_ok());
        for bad in ["", "Sandpit", "1abc", "toolongname", "a-b"] {
            c.prefix = bad.into();
            assert!(c.validate().is_err(), "{bad} accepted");
        }
    }
}
