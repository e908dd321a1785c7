//! `sandpit doctor`: prints the host checks of `sandbox::doctor`, one line each, with the
//! command that fixes each problem, and which isolation mode this host supports.

use std::process::ExitCode;

use sandbox::doctor::{self, Status};

use super::runtime_args::RuntimeArgs;

pub(crate) fn run(rt: &RuntimeArgs) -> ExitCode {
    let input = doctor::Input {
        state_dir: rt.state_dir.clone(),
        images_dir: rt.images_dir.clone(),
        default_image: rt.default_image.clone(),
        cgroup_root: "/sys/fs/cgroup".into(),
        registry: rt.registry_config(),
        runtime_dir: rt.runtime_state_dir(),
    };
    let checks = doctor::run(&input);
    let mut failed = false;
    for c in &checks {
        let mark = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => {
                failed = true;
                "FAIL"
            }
        };
        println!("[{mark}] {}: {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            if c.status != Status::Ok {
                println!("       fix: {fix}");
            }
        }
    }
    match doctor::supported_isolation(&checks) {
        Some(mode) => println!(
            "isolation: this host supports {}",
            match mode {
                sandbox::Isolation::Userns => "userns (the default)",
                sandbox::Isolation::Rootful => "only rootful: start with --isolation rootful, for trusted users only (node root can reach the host)",
            }
        ),
        None => {
            println!("isolation: this host cannot run nodes until the failures above are fixed")
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
