//! Host checks for `sandpit doctor`: can this machine run nodes, in which isolation mode, and
//! what to do about what is missing.
//!
//! Background. A node needs, from the host kernel: overlayfs, ext4 (the loop image under
//! `/var/lib/docker`), devpts, mqueue and tmpfs; the cgroup v1 hierarchies (`cgroups/` puts
//! every node in all of them; cgroup v2-only hosts are not supported yet); bridges, veth pairs
//! and, for swarm overlay networks, VXLAN. The default isolation additionally needs user
//! namespaces and *idmapped mounts* (`mount_setattr(MOUNT_ATTR_IDMAP)`, Linux 5.12, and support
//! in the filesystem holding the images), which is only knowable by trying one: that is what
//! the `idmapped-mounts` check does. Kernel build options come from `/proc/config.gz` or
//! `/boot/config-<release>`; without either, some features can only be inferred and are
//! reported as warnings to be checked at first use.
//!
//! Every check yields one line of detail and, when not Ok, the command or action that fixes
//! it. [`supported_isolation`] turns the list into the mode the runtime can use.
//!
//! Files: `check.rs` (a check and the names of all), `kernel.rs`, `idmap.rs`, `cgroups.rs`,
//! `host.rs` (tools, bridge netfilter, disk, memory), `images.rs` (base image, mirror).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cgroups::HIERARCHIES;
use crate::config::{Isolation, MirrorSource, RegistryConfig};
use crate::kernfs;
use crate::registry::Layout;

mod cgroups;
mod check;
mod host;
mod idmap;
mod images;
mod kernel;

use self::cgroups::{check_cgroups, parse_cgroup_mounts};
pub use check::{Check, Status};
use check::{IDMAP, ROOT, USERNS, VETH, VXLAN};
use host::{
    check_bridge_netfilter, check_disk, check_memory, check_state_reach, check_tools, find_tool,
    parse_forward_policy, search_dirs, TOOLS_NEEDED,
};
use idmap::{idmap_check, idmap_probe_dir, probe_idmapped_mount, IDMAP_FIX};
use images::{check_base_image, check_registry, mirror_answers};
use kernel::{
    check_bridge, check_filesystems, check_ipvs, check_kernel, check_link_kind, check_userns,
    read_kernel_config,
};

/// Where the runtime would keep its files; the same values as its configuration.
pub struct Input {
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
    pub default_image: String,
    pub cgroup_root: PathBuf,
    /// The registries `sandpit serve` would run with this configuration.
    pub registry: Option<RegistryConfig>,
    /// The runtime's own state directory (`<state-dir>/runtime`), where a running owner's
    /// registries listen.
    pub runtime_dir: PathBuf,
}

/// Runs every check against this host. Call it before the process starts threads if
/// possible; the idmapped-mount probe forks, but its child is async-signal-safe either way.
pub fn run(input: &Input) -> Vec<Check> {
    let euid = nix::unistd::geteuid().as_raw();
    let release = kernfs::read_trimmed("/proc/sys/kernel/osrelease")
        .ok()
        .unwrap_or_default();
    let version = kernfs::read_trimmed("/proc/sys/kernel/version")
        .ok()
        .unwrap_or_default();
    let config = read_kernel_config(&release);
    let cfg = config.as_ref();

    let mut checks = vec![
        check_root(euid),
        check_kernel(&release, &version, cfg),
        check_filesystems(
            &fs::read_to_string("/proc/filesystems").unwrap_or_default(),
            cfg,
        ),
        check_userns(
            kernfs::read_trimmed("/proc/sys/user/max_user_namespaces")
                .ok()
                .as_deref(),
            cfg,
        ),
        check_bridge(Path::new("/sys/module/bridge").exists(), cfg),
        check_link_kind(VETH, Path::new("/sys/module/veth").exists(), cfg),
        check_link_kind(VXLAN, Path::new("/sys/module/vxlan").exists(), cfg),
        check_ipvs(Path::new("/proc/net/ip_vs").exists(), cfg),
    ];

    let userns_ok = checks
        .iter()
        .all(|c| c.name != USERNS || c.status != Status::Fail);
    checks.push(if euid != 0 {
        Check::fail(
            IDMAP,
            "not tested: the probe needs root",
            "run `sandpit doctor` as root",
        )
    } else if !userns_ok {
        Check::fail(
            IDMAP,
            "not tested: user namespaces are unavailable",
            IDMAP_FIX,
        )
    } else {
        let dir = idmap_probe_dir(&input.images_dir, &input.default_image);
        idmap_check(&dir, probe_idmapped_mount(&dir))
    });

    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let resolve = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let resolved: Vec<(&str, PathBuf)> = HIERARCHIES
        .iter()
        .map(|h| (*h, resolve(&input.cgroup_root.join(h))))
        .collect();
    checks.push(check_cgroups(
        &resolve(&input.cgroup_root),
        &parse_cgroup_mounts(&mountinfo),
        &resolved,
    ));

    let dirs = search_dirs(std::env::var_os("PATH").as_deref());
    let found: Vec<(&str, Option<PathBuf>)> = TOOLS_NEEDED
        .iter()
        .map(|(tool, _)| (*tool, find_tool(&dirs, tool)))
        .collect();
    checks.push(check_tools(&found));

    let forward = Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| parse_forward_policy(&String::from_utf8_lossy(&o.stdout)));
    checks.push(check_bridge_netfilter(
        kernfs::read_trimmed("/proc/sys/net/bridge/bridge-nf-call-iptables")
            .ok()
            .as_deref(),
        forward.as_deref(),
    ));

    checks.push(check_base_image(&input.images_dir, &input.default_image));

    let disk_dir = crate::reach::nearest_existing(&input.state_dir);
    let free = crate::Runtime::disk_use_of(&input.state_dir)
        .map(|d| d.free_bytes)
        .map_err(|e| crate::kernfs::errno_of(&e));
    checks.push(check_disk(&input.state_dir, disk_dir, free));
    let nodes_dir = input.runtime_dir.join("nodes");
    checks.push(check_state_reach(
        &nodes_dir,
        crate::reach::Unreachable::check(&nodes_dir),
    ));

    checks.push(check_memory(
        &fs::read_to_string("/proc/meminfo").unwrap_or_default(),
    ));

    let registry = input.registry.as_ref();
    let seeded = registry.and_then(|r| match &r.mirror {
        MirrorSource::Seeded(store) => Some(store),
        MirrorSource::PullThrough { .. } => None,
    });
    checks.push(check_registry(
        registry,
        registry.is_some_and(|r| r.exe.is_file()),
        seeded
            .filter(|s| s.is_dir())
            .map(|s| crate::registry::store_images(s)),
        mirror_answers(
            &Layout::of_state_dir(&input.runtime_dir)
                .files("mirror")
                .socket,
        ),
    ));
    checks
}

/// The isolation mode these checks allow: `Userns` when user namespaces and idmapped mounts
/// work, `Rootful` when only those fail, `None` when anything else fails.
pub fn supported_isolation(checks: &[Check]) -> Option<Isolation> {
    let userns_only = |c: &Check| c.name == USERNS || c.name == IDMAP;
    let failed = |c: &&Check| c.status == Status::Fail;
    if checks.iter().filter(failed).any(|c| !userns_only(c)) {
        None
    } else if checks.iter().filter(failed).any(userns_only) {
        Some(Isolation::Rootful)
    } else {
        Some(Isolation::Userns)
    }
}

fn check_root(euid: u32) -> Check {
    if euid == 0 {
        Check::ok(ROOT, "running as root (euid 0)")
    } else {
        Check::fail(
            ROOT,
            format!("running as euid {euid}: nodes need namespaces, mounts, cgroups and links"),
            "run it as root: `sudo sandpit doctor`",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::check::{CGROUPS, IPVS, KERNEL, MIRROR, STATE_DIR};
    use super::*;

    fn named(name: &str, status: Status) -> Check {
        Check {
            name: name.into(),
            status,
            detail: String::new(),
            fix: None,
        }
    }

    #[test]
    fn isolation_follows_the_checks() {
        let mut checks: Vec<Check> = [ROOT, KERNEL, USERNS, IDMAP, CGROUPS, IPVS]
            .iter()
            .map(|n| named(n, Status::Ok))
            .collect();
        checks[5].status = Status::Warn;
        assert_eq!(supported_isolation(&checks), Some(Isolation::Userns));
        checks[3].status = Status::Fail;
        assert_eq!(supported_isolation(&checks), Some(Isolation::Rootful));
        checks[2].status = Status::Fail;
        assert_eq!(supported_isolation(&checks), Some(Isolation::Rootful));
        checks[4].status = Status::Fail;
        assert_eq!(supported_isolation(&checks), None);
        checks[2].status = Status::Ok;
        checks[3].status = Status::Ok;
        assert_eq!(supported_isolation(&checks), None);
    }

    #[test]
    fn checks_serialize_lowercase() {
        let v = serde_json::to_value(named(IPVS, Status::Warn)).unwrap();
        assert_eq!(v["status"], "warn");
        assert_eq!(v["name"], "ipvs");
    }

    #[test]
    #[ignore = "reads and probes the real host; needs root"]
    fn real_host() {
        let input = Input {
            state_dir: "/var/lib/sandpit/state".into(),
            images_dir: "/var/lib/sandpit/images".into(),
            default_image: "trixie".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            registry: Some(RegistryConfig {
                exe: "/usr/bin/docker-registry".into(),
                mirror: MirrorSource::Seeded("/var/lib/sandpit/images/registry".into()),
            }),
            runtime_dir: "/var/lib/sandpit/runtime".into(),
        };
        let checks = run(&input);
        for c in &checks {
            let status = format!("{:?}", c.status).to_uppercase();
            eprintln!("{status:5} {:17} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                eprintln!("{:23} fix: {fix}", "");
            }
        }
        eprintln!("supported isolation: {:?}", supported_isolation(&checks));
        let get = |n: &str| checks.iter().find(|c| c.name == n).unwrap();
        assert_eq!(get(ROOT).status, Status::Ok);
        assert_eq!(get(IDMAP).status, Status::Ok, "{}", get(IDMAP).detail);
        assert_eq!(get(CGROUPS).status, Status::Ok, "{}", get(CGROUPS).detail);
        // ops/setup published the seed images.
        assert_eq!(get(MIRROR).status, Status::Ok, "{}", get(MIRROR).detail);
        // Nodes reach the default state directory.
        assert_eq!(
            get(STATE_DIR).status,
            Status::Ok,
            "{}",
            get(STATE_DIR).detail
        );
        assert_eq!(checks.len(), 17);
        // The probe's child was killed and reaped (a zombie would still be listed here;
        // other test threads' children are not).
        let children = fs::read_to_string("/proc/thread-self/children").unwrap();
        assert_eq!(children.trim(), "", "children left by the idmap probe");
    }
}
