//! The `sandpit` binary: `serve`, `doctor`, node and network management from the command line,
//! and the hidden helpers the runtime re-executes (`__node-init`, `__exec`).
//!
//! The helpers are dispatched before anything else happens: they must stay single-threaded
//! (`unshare`/`setns` of a user namespace refuse threaded callers), so no async runtime and no
//! logging thread exists when they run.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sandbox::{
    ExecOptions, Isolation, MirrorSource, NodeLimits, NodeSpec, OrphanPolicy, RegistryConfig,
    Runtime, RuntimeConfig,
};

mod api;
mod assets;
mod doctor_cmd;
mod exec;
mod metrics;
mod ports;
mod proxy;
mod serve;
mod session;
mod shell;
mod store;
mod template;

#[derive(Parser)]
#[command(
    name = "sandpit",
    version,
    about = "A self-hosted browser playground for Docker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(serve::ServeArgs),
    /// Check that this host can run nodes, and say how to fix what is missing.
    Doctor(RuntimeArgs),
    /// Manage session networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage nodes directly (the server must not be running on the same state directory).
    #[command(subcommand)]
    Node(NodeCmd),
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a session network (bridge, subnet, firewall rules).
    Create {
        name: String,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// Destroy a network and every node on it (with --all: every network, node and host object
    /// of this prefix, for taking an instance off a host).
    Rm {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// List networks.
    Ls {
        #[command(flatten)]
        rt: RuntimeArgs,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Create a node (and its network if missing); prints it as JSON once its engine answers.
    Create {
        /// The session network.
        #[arg(long)]
        network: String,
        /// Host name (default: the first free nodeN).
        #[arg(long)]
        name: Option<String>,
        /// Base image (default: --default-image).
        #[arg(long)]
        image: Option<String>,
        /// Stay in the foreground after creating, until killed.
        #[arg(long)]
        hold: bool,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// Destroy a node.
    Rm {
        network: String,
        name: String,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// List nodes as JSON lines.
    Ls {
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// Run a command inside a node; exits with its status.
    Exec {
        network: String,
        name: String,
        #[command(flatten)]
        rt: RuntimeArgs,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

/// Where the runtime keeps its state and how it names what it creates on the host.
#[derive(Args, Clone)]
struct RuntimeArgs {
    /// State directory (the runtime keeps its records in <state-dir>/runtime).
    #[arg(long, env = "SANDPIT_STATE_DIR", default_value = "/var/lib/sandpit")]
    state_dir: PathBuf,
    /// Base images built by ops/image/build-base.
    #[arg(
        long,
        env = "SANDPIT_IMAGES_DIR",
        default_value = "/var/lib/sandpit/images"
    )]
    images_dir: PathBuf,
    /// Image for nodes that do not name one.
    #[arg(long, env = "SANDPIT_DEFAULT_IMAGE", default_value = "bookworm")]
    default_image: String,
    /// Name put on every host object (bridges, veths, cgroups, firewall chains): 1-8 of a-z0-9.
    #[arg(long, env = "SANDPIT_PREFIX", default_value = "sandpit")]
    prefix: String,
    /// Addresses for session networks, one /24 each.
    #[arg(long, env = "SANDPIT_SUBNET_POOL", default_value = "10.201.0.0/16")]
    subnet_pool: sandbox::Subnet,
    /// userns (root inside is an unprivileged host uid) or rootful (fallback).
    #[arg(long, env = "SANDPIT_ISOLATION", default_value = "userns")]
    isolation: Isolation,
    /// What to do with nodes left by a previous process: adopt or destroy.
    #[arg(long, env = "SANDPIT_ORPHANS", default_value = "adopt")]
    orphans: OrphanPolicy,
    /// Memory limit per node, in MiB.
    #[arg(long, env = "SANDPIT_NODE_MEMORY_MIB", default_value_t = 2048)]
    node_memory_mib: u64,
    /// Process limit per node.
    #[arg(long, env = "SANDPIT_NODE_PIDS", default_value_t = 2048)]
    node_pids: u64,
    /// CPU limit per node, in cores (0: none).
    #[arg(long, env = "SANDPIT_NODE_CPUS", default_value_t = 1.0)]
    node_cpus: f64,
    /// Size cap of each node's /var/lib/docker, in GiB.
    #[arg(long, env = "SANDPIT_NODE_DISK_GIB", default_value_t = 10)]
    node_disk_gib: u64,
    /// Give nodes a route to the outside (NAT). Off by default.
    #[arg(long, env = "SANDPIT_EGRESS")]
    egress: bool,
    /// Run no registries: nodes get no mirror and no session registry.
    #[arg(long, env = "SANDPIT_NO_REGISTRY")]
    no_registry: bool,
    /// The distribution registry binary (Debian's docker-registry package).
    #[arg(
        long,
        env = "SANDPIT_REGISTRY_EXE",
        default_value = "/usr/bin/docker-registry"
    )]
    registry_exe: PathBuf,
    /// Make the mirror a pull-through cache of this registry (production: the host must reach
    /// it; nodes still need no egress),
    /// e.g. https://registry-1.docker.io. Without it the mirror serves the seed images in
    /// <images-dir>/registry (ops/seed/publish).
    #[arg(long, env = "SANDPIT_MIRROR_UPSTREAM")]
    mirror_upstream: Option<String>,
    /// User name for the upstream (lifts Docker Hub's anonymous pull limit).
    #[arg(long, env = "SANDPIT_MIRROR_USERNAME", requires = "mirror_upstream")]
    mirror_username: Option<String>,
    /// Password or access token for the upstream; prefer the environment variable.
    #[arg(
        long,
        env = "SANDPIT_MIRROR_PASSWORD",
        hide_env_values = true,
        requires = "mirror_username"
    )]
    mirror_password: Option<String>,
}

impl RuntimeArgs {
    fn config(&self) -> anyhow::Result<RuntimeConfig> {
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
            disk_bytes: self.node_disk_gib << 30,
        };
        c.validate().map_err(anyhow::Error::msg)?;
        Ok(c)
    }

    fn runtime_state_dir(&self) -> PathBuf {
        self.state_dir.join("runtime")
    }

    fn registry_config(&self) -> Option<RegistryConfig> {
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

    async fn open(&self) -> anyhow::Result<Runtime> {
        let cfg = self.config()?;
        Runtime::open(cfg).await.context("open the node runtime")
    }
}

fn main() -> ExitCode {
    // The re-executed helpers come first, before any thread exists.
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__node-init") => {
            let dir = args.get(2).map(PathBuf::from).unwrap_or_default();
            sandbox::run_node_init(&dir)
        }
        Some("__exec") => sandbox::run_exec_helper(&args[2..]),
        _ => {}
    }
    let cli = Cli::parse();
    if let Command::Doctor(rt) = &cli.command {
        // Doctor forks for its idmapped-mount probe: it runs before any runtime thread exists.
        return doctor_cmd::run(rt);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sandpit: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandpit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Doctor(_) => unreachable!("handled before the async runtime starts"),
        Command::Serve(args) => serve::run(args).await?,
        Command::Network(NetworkCmd::Create { name, rt }) => {
            let net = rt.open().await?.create_network(&name).await?;
            println!("{}", serde_json::to_string(&net)?);
        }
        Command::Network(NetworkCmd::Rm { name, all: _, rt }) => {
            let runtime = rt.open().await?;
            if let Some(name) = name {
                runtime.destroy_network(&name).await?;
            } else {
                // --all (clap requires one or the other).
                runtime.destroy_all().await?;
                let cfg = runtime.config().clone();
                drop(runtime);
                let left = Runtime::leftovers(&cfg).await;
                anyhow::ensure!(
                    left.is_empty(),
                    "left on the host: {}; see `ops/leakcheck {}`",
                    left.join(", "),
                    cfg.prefix
                );
            }
        }
        Command::Network(NetworkCmd::Ls { rt }) => {
            for n in rt.open().await?.networks() {
                println!("{}", serde_json::to_string(&n)?);
            }
        }
        Command::Node(NodeCmd::Create {
            network,
            name,
            image,
            hold,
            rt,
        }) => {
            let runtime = rt.open().await?;
            if runtime.network(&network).is_none() {
                runtime.create_network(&network).await?;
            }
            let node = runtime
                .create_node(NodeSpec {
                    network,
                    hostname: name,
                    image,
                })
                .await?;
            println!("{}", serde_json::to_string(&node)?);
            if hold {
                std::future::pending::<()>().await;
            }
        }
        Command::Node(NodeCmd::Rm { network, name, rt }) => {
            rt.open().await?.destroy_node(&network, &name).await?;
        }
        Command::Node(NodeCmd::Ls { rt }) => {
            for n in rt.open().await?.nodes() {
                println!("{}", serde_json::to_string(&n)?);
            }
        }
        Command::Node(NodeCmd::Exec {
            network,
            name,
            rt,
            argv,
        }) => {
            let runtime = rt.open().await?;
            let status = runtime
                .command(&network, &name, &argv, &ExecOptions::default())?
                .status()
                .await
                .context("run the exec helper")?;
            return Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
