//! The options that open a state directory's node runtime, shared by every command.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use sandbox::{
    Isolation, MirrorSource, NodeLimits, OrphanPolicy, RegistryConfig, Runtime, RuntimeConfig,
};

/// Where the runtime keeps its state and how it names what it creates on the host.
#[derive(Args, Clone)]
pub struct RuntimeArgs {
    /// State directory (the runtime keeps its records in <state-dir>/runtime).
    #[arg(long, env = "SANDPIT_STATE_DIR", default_value = "/var/lib/sandpit")]
    pub(super) state_dir: PathBuf,
    /// Base images built by ops/image/build-base.
    #[arg(
        long,
        env = "SANDPIT_IMAGES_DIR",
        default_value = "/var/lib/sandpit/images"
    )]
    pub(super) images_dir: PathBuf,
    /// Image for nodes that do not name one.
    #[arg(long, env = "SANDPIT_DEFAULT_IMAGE", default_value = "trixie")]
    pub(super) default_image: String,
    /// Name put on every host object (bridges, veths, cgroups, firewall chains): 1-8 of a-z0-9.
    #[arg(long, env = "SANDPIT_PREFIX", default_value = "sandpit")]
    pub(super) prefix: String,
    /// Addresses for session networks, one /24 each.
    #[arg(long, env = "SANDPIT_SUBNET_POOL", default_value = "10.201.0.0/16")]
    pub(super) subnet_pool: sandbox::Subnet,
    /// userns (root inside is an unprivileged host uid) or rootful (fallback).
    #[arg(long, env = "SANDPIT_ISOLATION", default_value = "userns")]
    pub(super) isolation: Isolation,
    /// What to do with nodes left by a previous process: adopt or destroy.
    #[arg(long, env = "SANDPIT_ORPHANS", default_value = "adopt")]
    pub(super) orphans: OrphanPolicy,
    /// Memory limit per node, in MiB.
    #[arg(long, env = "SANDPIT_NODE_MEMORY_MIB", default_value_t = 2048)]
    pub(super) node_memory_mib: u64,
    /// Process limit per node.
    #[arg(long, env = "SANDPIT_NODE_PIDS", default_value_t = 2048)]
    pub(super) node_pids: u64,
    /// CPU limit per node, in cores (0: none).
    #[arg(long, env = "SANDPIT_NODE_CPUS", default_value_t = 1.0)]
    pub(super) node_cpus: f64,
    /// Size cap of each node's /var/lib/docker, in GiB (default: `serve` derives it from the
    /// free disk, 2 to 10; other commands 10).
    #[arg(long, env = "SANDPIT_NODE_DISK_GIB")]
    pub(super) node_disk_gib: Option<u64>,
    /// Give nodes a route to the outside (NAT). Off by default.
    #[arg(long, env = "SANDPIT_EGRESS")]
    pub(super) egress: bool,
    /// Run no registries: nodes get no mirror and no session registry.
    #[arg(long, env = "SANDPIT_NO_REGISTRY")]
    pub(super) no_registry: bool,
    /// The distribution registry binary (Debian's docker-registry package).
    #[arg(
        long,
        env = "SANDPIT_REGISTRY_EXE",
        default_value = "/usr/bin/docker-registry"
    )]
    pub(super) registry_exe: PathBuf,
    /// Make the mirror a pull-through cache of this registry (production: the host must reach
    /// it; nodes still need no egress),
    /// e.g. https://registry-1.docker.io. Without it the mirror serves the seed images in
    /// <images-dir>/registry (ops/seed/publish).
    #[arg(long, env = "SANDPIT_MIRROR_UPSTREAM")]
    pub(super) mirror_upstream: Option<String>,
    /// User name for the upstream (lifts Docker Hub's anonymous pull limit).
    #[arg(long, env = "SANDPIT_MIRROR_USERNAME", requires = "mirror_upstream")]
    pub(super) mirror_username: Option<String>,
    /// Password or access token for the upstream; prefer the environment variable.
    #[arg(
        long,
        env = "SANDPIT_MIRROR_PASSWORD",
        hide_env_values = true,
        requires = "mirror_username"
    )]
    pub(super) mirror_password: Option<String>,
}

impl RuntimeArgs {
    pub fn config(&self) -> anyhow::Result<RuntimeConfig> {
        let exe = std::env::current_exe().context("find the sandpit binary")?;
        let mut c = RuntimeConfig::new(exe);
        c.prefix = self.prefix.clone();
        c.cgroup_parent = self.prefix.clone();
        c.state_dir = self.runtime_state_dir();
        c.images_dir = self.images_dir.clone();
        c.default_image = self.default_image.clone();
        c.subnet_pool = self.subnet_pool;
        c.isolation = self.isolation;
        c.orphans = self.orphans;
        c.egress = self.egress;
        c.registry = self.registry_config();
        c.limits = NodeLimits {
            memory_bytes: self.node_memory_mib << 20,
            pids: self.node_pids,
            cpus: self.node_cpus,
            disk_bytes: self.node_disk_gib.unwrap_or(10) << 30,
        };
        c.validate().map_err(anyhow::Error::msg)?;
        Ok(c)
    }

    pub fn runtime_state_dir(&self) -> PathBuf {
        self.state_dir.join("runtime")
    }

    pub fn registry_config(&self) -> Option<RegistryConfig> {
        (!self.no_registry).then(|| RegistryConfig {
            exe: self.registry_exe.clone(),
            mirror: match &self.mirror_upstream {
                Some(upstream) => MirrorSource::PullThrough {
                    upstream: upstream.clone(),
                    username: self.mirror_username.clone(),
                    password: self.mirror_password.clone(),
                },
                None => MirrorSource::Seeded(self.images_dir.join("registry")),
            },
        })
    }

    pub async fn open(&self) -> anyhow::Result<Runtime> {
        let cfg = self.config()?;
        Runtime::open(cfg).await.context("open the node runtime")
    }
}
