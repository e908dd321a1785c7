//! Starting a node: the host side of the launch handshake and the node's own init.
//!
//! A node is started by re-executing our own binary (`sandpit __node-init <dir>`) rather than by
//! forking the multi-threaded server: the new process is single-threaded, so it may call
//! `unshare(CLONE_NEWUSER)` (refused to threaded callers) and do ordinary work after `fork`.
//!
//! Process model and handshake over a socketpair (fd 3 in the child):
//! ```text
//! host (runtime)                      launcher (sandpit __node-init)        node init (PID 1)
//! spawn launcher ------------------->  wait
//! move launcher into node cgroups
//! "attached" ----------------------->  unshare(user*, mnt, net, uts, ipc, cgroup)
//!                                      make / private
//!           <----------------------- "unshared"
//! write uid/gid maps*, make idmapped
//! base image*, veth into its netns
//! "mapped" + image fd* ------------>   become root in the userns*
//!                                      unshare(pid); fork ------------->  mount overlay root,
//!           <----------------------- "pid <n>"; exit                      /var/lib/docker, /proc,
//!                                                                         /sys, cgroups, /dev,
//!                                                                         /etc files; pivot_root
//!           <--------------------------------------------------------- "ready" | "error <why>"
//! poll the engine's socket                                                start and supervise
//!                                                                         containerd + dockerd,
//!                                                                         reap zombies
//! ```
//! (* user-namespace isolation only.) Ordering constraints: the launcher joins the node's
//! cgroups before it creates its cgroup namespace, so that namespace's root is the node's
//! cgroup; the maps must exist before the launcher can become root in its user namespace; the
//! idmapped mount needs the user namespace, so only the host can make it and passes it as a
//! file descriptor; `/proc` is mounted by the node's PID 1, since a proc mount shows the pid
//! namespace of its mounter.

//!
//! Files: `config.rs` (what both sides agree on), `launch.rs` (the host side), `launcher.rs`
//! (`sandpit __node-init`), `mounts.rs` (the node's file system, made by its PID 1), `pid1.rs`
//! (PID 1 supervising the engine), `daemons.rs` (containerd and dockerd, and why we start
//! containerd ourselves).

mod config;
mod daemons;
mod launch;
mod launcher;
mod mounts;
mod pid1;

pub use config::InitError;
pub(crate) use config::{InitConfig, NODE_ENV};
pub(crate) use launch::Launch;
pub use launcher::run_node_init;
