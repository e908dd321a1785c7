//! The command line: `serve`, `doctor`, and node and network management while no server owns
//! the state directory. Options are typed (clap derive), each with an environment variable and
//! its default in `--help`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sandbox::{ExecOptions, NodeSpec, Runtime};

mod doctor;
mod runtime_args;
mod serve_args;

pub use runtime_args::RuntimeArgs;
pub use serve_args::ServeArgs;

#[derive(Parser)]
#[command(
    name = "sandpit",
    version,
    about = "A self-hosted browser playground for Docker"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(ServeArgs),
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
pub enum NetworkCmd {
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
pub enum NodeCmd {
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

/// Runs the parsed command line; the hidden helpers were dispatched before (see `main.rs`).
pub fn main(cli: Cli) -> ExitCode {
    if let Command::Doctor(rt) = &cli.command {
        // Doctor forks for its idmapped-mount probe: it runs before any runtime thread exists.
        return doctor::run(rt);
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

/// Runs a command other than `doctor` (which runs before the async runtime exists).
async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Doctor(_) => unreachable!("handled before the async runtime starts"),
        Command::Serve(args) => crate::serve::run(args.options()?, args.rt.config()?).await?,
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
