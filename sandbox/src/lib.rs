//! sandpit's node runtime.
//!
//! A node is a Linux sandbox built from kernel primitives with its own Docker engine: user,
//! mount, pid, net, uts, ipc and cgroup namespaces; an overlay root over a shared read-only
//! base image; `/var/lib/docker` on its own ext4 loop image; a cgroup with memory, pids and CPU
//! limits; a veth on its session's bridge. [`Runtime`] creates, finds, execs into and destroys
//! nodes and session networks. See `ARCHITECTURE.md` for the process model.

// Only `sys.rs` may use `unsafe`: the syscalls without a safe wrapper.
#![deny(unsafe_code)]

mod cgroups;
mod config;
pub mod doctor;
mod engine;
mod exec;
pub mod hold;
mod image;
mod init;
mod kernfs;
mod network;
mod node_root;
mod process;
mod pty;
mod reach;
mod registry;
mod rootfs;
mod runtime;
mod state;
#[allow(unsafe_code)]
mod sys;
#[cfg(test)]
mod testdir;
mod unix_http;

pub use cgroups::{CgroupError, CgroupStats};
pub use config::{
    Isolation, MirrorSource, NodeLimits, OrphanPolicy, RegistryConfig, RuntimeConfig,
};
pub use engine::{Engine, EngineError, EngineEvents};
pub use exec::{run_exec_helper, ExecOptions};
pub use image::{EngineVersions, Image, ImageError};
pub use init::{run_node_init, InitError};
pub use network::{HostNet, NetworkError, PoolFull, Subnet, SubnetError};
pub use pty::{NodePty, PtyError};
pub use registry::{store_images, RegistryError, MIRROR_PORT, PUSH_PORT, REGISTRY_HOST};
pub use rootfs::RootfsError;
pub use runtime::{
    DiskUse, Error, Hold, NetworkInfo, NodeInfo, NodeSpec, NodeStats, NodeStatus, Runtime,
    ShellProcess,
};
pub use state::StateError;
