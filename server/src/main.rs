//! The `sandpit` binary: the hidden helpers the runtime re-executes (`__node-init`, `__exec`),
//! then the command line (`sandpit::cli`).
//!
//! The helpers are dispatched before anything else happens: they must stay single-threaded
//! (`unshare`/`setns` of a user namespace refuse threaded callers), so no async runtime and no
//! logging thread exists when they run.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__node-init") => {
            let dir = args.get(2).map(PathBuf::from).unwrap_or_default();
            sandbox::run_node_init(&dir)
        }
        Some("__exec") => sandbox::run_exec_helper(&args[2..]),
        _ => sandpit::cli::main(sandpit::cli::Cli::parse()),
    }
}
