//! Kernel checks: version, build options (`/proc/config.gz` or `/boot/config-<release>`),
//! filesystems, user namespaces, bridges, veth, VXLAN and IPVS.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use super::check::{Check, BRIDGE, FILESYSTEMS, IPVS, KERNEL, USERNS, VXLAN};

// ---- kernel build options ----

/// Filesystems a node mounts, with the kernel option that provides each.
const FILESYSTEMS_NEEDED: &[(&str, &str)] = &[
    ("overlay", "OVERLAY_FS"),
    ("ext4", "EXT4_FS"),
    ("cgroup", "CGROUPS"),
    ("devpts", "UNIX98_PTYS"),
    ("mqueue", "POSIX_MQUEUE"),
    ("tmpfs", "TMPFS"),
];

/// Kernel build options (`CONFIG_` prefix stripped) and where they were read from.
pub(super) struct KernelConfig {
    source: String,
    options: HashMap<String, String>,
}

/// What the kernel config says about one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    BuiltIn,
    Module,
    Absent,
    /// No config to read.
    Unknown,
}

pub(super) fn read_kernel_config(release: &str) -> Option<KernelConfig> {
    // /proc/config.gz is gzip; the host's gzip spares us a decompressor dependency.
    if Path::new("/proc/config.gz").exists() {
        if let Ok(out) = Command::new("gzip")
            .args(["-dc", "/proc/config.gz"])
            .output()
        {
            if out.status.success() {
                return Some(KernelConfig {
                    source: "/proc/config.gz".into(),
                    options: parse_kernel_config(&String::from_utf8_lossy(&out.stdout)),
                });
            }
        }
    }
    let boot = format!("/boot/config-{release}");
    let text = fs::read_to_string(&boot).ok()?;
    Some(KernelConfig {
        source: boot,
        options: parse_kernel_config(&text),
    })
}

fn parse_kernel_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("CONFIG_")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn feature(cfg: Option<&KernelConfig>, option: &str) -> Feature {
    match cfg {
        None => Feature::Unknown,
        Some(c) => match c.options.get(option).map(String::as_str) {
            Some("y") => Feature::BuiltIn,
            Some("m") => Feature::Module,
            _ => Feature::Absent,
        },
    }
}

/// `(major, minor)` of a release string such as `6.18.44-fc-v669`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub(super) fn check_kernel(release: &str, version: &str, cfg: Option<&KernelConfig>) -> Check {
    let source = match cfg {
        Some(c) => format!("build options from {}", c.source),
        None => "no kernel config readable (/proc/config.gz, /boot/config-*): features inferred"
            .to_string(),
    };
    let detail = format!("Linux {release} ({version}); {source}");
    match kernel_version(release) {
        Some(v) if v >= (5, 12) => Check::ok(KERNEL, detail),
        Some(_) => Check::warn(
            KERNEL,
            format!("{detail}; idmapped mounts need Linux >= 5.12, so only rootful isolation"),
            "upgrade to Linux >= 5.12 for user-namespace isolation",
        ),
        None => Check::warn(
            KERNEL,
            format!("cannot parse kernel release {release:?}"),
            "check /proc/sys/kernel/osrelease",
        ),
    }
}

pub(super) fn check_filesystems(proc_filesystems: &str, cfg: Option<&KernelConfig>) -> Check {
    let present: Vec<&str> = proc_filesystems
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let mut modules = Vec::new();
    let mut missing = Vec::new();
    for (fs_name, option) in FILESYSTEMS_NEEDED {
        if present.contains(fs_name) {
            continue;
        }
        // A module the kernel loads by itself on the first mount.
        if feature(cfg, option) == Feature::Module {
            modules.push(*fs_name);
        } else {
            missing.push((*fs_name, *option));
        }
    }
    let names: Vec<&str> = FILESYSTEMS_NEEDED.iter().map(|(n, _)| *n).collect();
    if missing.is_empty() {
        let mut detail = format!("{} supported", names.join(", "));
        if !modules.is_empty() {
            detail += &format!(
                " ({} as modules, loaded at first mount)",
                modules.join(", ")
            );
        }
        return Check::ok(FILESYSTEMS, detail);
    }
    let fs_list: Vec<&str> = missing.iter().map(|(n, _)| *n).collect();
    let opts: Vec<String> = missing.iter().map(|(_, o)| format!("CONFIG_{o}")).collect();
    Check::fail(
        FILESYSTEMS,
        format!("not in /proc/filesystems: {}", fs_list.join(", ")),
        format!(
            "load the modules (`modprobe {}`) or use a kernel built with {}",
            fs_list.join(" "),
            opts.join(", ")
        ),
    )
}

pub(super) fn check_userns(max_user_namespaces: Option<&str>, cfg: Option<&KernelConfig>) -> Check {
    let no_kernel_support = || {
        Check::fail(
            USERNS,
            "the kernel has no user namespaces (no /proc/sys/user/max_user_namespaces)",
            "use a kernel with CONFIG_USER_NS=y, or run with --isolation rootful (trusted users only)",
        )
    };
    if feature(cfg, "USER_NS") == Feature::Absent {
        return no_kernel_support();
    }
    let Some(text) = max_user_namespaces else {
        return no_kernel_support();
    };
    match text.parse::<u64>() {
        Ok(0) => Check::fail(
            USERNS,
            "user namespaces are disabled (user.max_user_namespaces = 0)",
            "sysctl -w user.max_user_namespaces=65536 (persist it in /etc/sysctl.d/), or run \
             with --isolation rootful (trusted users only)",
        ),
        Ok(n) => Check::ok(
            USERNS,
            format!("available (user.max_user_namespaces = {n})"),
        ),
        Err(_) => Check::warn(
            USERNS,
            format!("unexpected user.max_user_namespaces {text:?}"),
            "check /proc/sys/user/max_user_namespaces",
        ),
    }
}

pub(super) fn check_bridge(module_dir: bool, cfg: Option<&KernelConfig>) -> Check {
    let fix = "use a kernel with CONFIG_BRIDGE (and CONFIG_VETH, CONFIG_VXLAN)";
    if module_dir {
        return Check::ok(BRIDGE, "bridge support present (/sys/module/bridge)");
    }
    match feature(cfg, "BRIDGE") {
        Feature::BuiltIn => Check::ok(BRIDGE, "built in (CONFIG_BRIDGE=y)"),
        Feature::Module => Check::ok(BRIDGE, "module (CONFIG_BRIDGE=m), loaded at first use"),
        Feature::Absent => {
            Check::fail(BRIDGE, "CONFIG_BRIDGE is not set: no session networks", fix)
        }
        Feature::Unknown => Check::warn(
            BRIDGE,
            "unknown, checked at first use (no /sys/module/bridge, no kernel config)",
            fix,
        ),
    }
}

/// veth (every node needs one) or vxlan (only swarm overlay networks do).
pub(super) fn check_link_kind(name: &str, module_dir: bool, cfg: Option<&KernelConfig>) -> Check {
    let option = name.to_ascii_uppercase();
    let fix = format!("use a kernel with CONFIG_{option}");
    if module_dir {
        return Check::ok(name, format!("{name} support present (/sys/module/{name})"));
    }
    match feature(cfg, &option) {
        Feature::BuiltIn => Check::ok(name, format!("built in (CONFIG_{option}=y)")),
        Feature::Module => Check::ok(
            name,
            format!("module (CONFIG_{option}=m), loaded at first use"),
        ),
        Feature::Absent if name == VXLAN => Check::warn(
            name,
            "CONFIG_VXLAN is not set: swarm overlay networks do not work inside nodes",
            fix,
        ),
        Feature::Absent => Check::fail(
            name,
            format!("CONFIG_{option} is not set: nodes cannot be connected"),
            fix,
        ),
        Feature::Unknown => Check::warn(name, "unknown, checked at first use", fix),
    }
}

pub(super) fn check_ipvs(proc_ip_vs: bool, cfg: Option<&KernelConfig>) -> Check {
    if proc_ip_vs {
        return Check::ok(
            IPVS,
            "IPVS present: swarm service VIPs and the routing mesh work",
        );
    }
    if feature(cfg, "IP_VS") == Feature::Module {
        return Check::warn(
            IPVS,
            "IPVS is a module that is not loaded: swarm service VIPs and the ingress routing \
             mesh do not work until it is",
            "modprobe ip_vs (persist it in /etc/modules-load.d/)",
        );
    }
    Check::warn(
        IPVS,
        "no IPVS: swarm service VIPs and the ingress routing mesh do not work; use `docker \
         service create --endpoint-mode dnsrr` and `--publish mode=host`",
        "use a kernel with CONFIG_IP_VS (most distribution kernels have it)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::{Status, VETH};

    fn config(text: &str) -> KernelConfig {
        KernelConfig {
            source: "test".into(),
            options: parse_kernel_config(text),
        }
    }

    #[test]
    fn kernel_config_is_parsed() {
        let c = config("# comment\nCONFIG_BRIDGE=y\nCONFIG_VXLAN=m\n# CONFIG_IP_VS is not set\nCONFIG_LOCALVERSION=\"-fc\"\n");
        assert_eq!(feature(Some(&c), "BRIDGE"), Feature::BuiltIn);
        assert_eq!(feature(Some(&c), "VXLAN"), Feature::Module);
        assert_eq!(feature(Some(&c), "IP_VS"), Feature::Absent);
        assert_eq!(feature(Some(&c), "LOCALVERSION"), Feature::Absent);
        assert_eq!(feature(None, "BRIDGE"), Feature::Unknown);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("weird"), None);
        assert_eq!(check_kernel("6.18.44", "#1", None).status, Status::Ok);
        assert_eq!(check_kernel("5.10.0", "#1", None).status, Status::Warn);
    }

    #[test]
    fn filesystems() {
        let all = "nodev\tsysfs\nnodev\ttmpfs\nnodev\tcgroup\nnodev\tdevpts\n\text4\nnodev\toverlay\nnodev\tmqueue\n";
        assert_eq!(check_filesystems(all, None).status, Status::Ok);
        let no_overlay = all.replace("nodev\toverlay\n", "");
        let c = check_filesystems(&no_overlay, None);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.detail, "not in /proc/filesystems: overlay");
        assert!(c.fix.unwrap().contains("modprobe overlay"));
        // A module loads itself at the first mount.
        let m = config("CONFIG_OVERLAY_FS=m\n");
        let c = check_filesystems(&no_overlay, Some(&m));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("overlay as modules"), "{}", c.detail);
    }

    #[test]
    fn user_namespaces() {
        assert_eq!(check_userns(Some("96365"), None).status, Status::Ok);
        let c = check_userns(Some("0"), None);
        assert_eq!(c.status, Status::Fail);
        assert!(c
            .fix
            .unwrap()
            .starts_with("sysctl -w user.max_user_namespaces="));
        assert_eq!(check_userns(None, None).status, Status::Fail);
        let no = config("# CONFIG_USER_NS is not set\n");
        assert_eq!(check_userns(Some("10"), Some(&no)).status, Status::Fail);
    }

    #[test]
    fn network_features() {
        let c = config("CONFIG_BRIDGE=y\nCONFIG_VETH=m\n# CONFIG_VXLAN is not set\n");
        assert_eq!(check_bridge(false, Some(&c)).status, Status::Ok);
        assert_eq!(check_bridge(true, None).status, Status::Ok);
        let unknown = check_bridge(false, None);
        assert_eq!(unknown.status, Status::Warn);
        assert!(unknown.detail.starts_with("unknown, checked at first use"));
        assert_eq!(check_bridge(false, Some(&config(""))).status, Status::Fail);

        assert_eq!(check_link_kind(VETH, false, Some(&c)).status, Status::Ok);
        assert_eq!(
            check_link_kind(VETH, false, Some(&config(""))).status,
            Status::Fail
        );
        assert_eq!(check_link_kind(VXLAN, false, Some(&c)).status, Status::Warn);
        assert_eq!(check_link_kind(VXLAN, true, Some(&c)).status, Status::Ok);
        let u = check_link_kind(VXLAN, false, None);
        assert_eq!(
            (u.status, u.detail.as_str()),
            (Status::Warn, "unknown, checked at first use")
        );
    }

    #[test]
    fn ipvs() {
        assert_eq!(check_ipvs(true, None).status, Status::Ok);
        let c = check_ipvs(false, Some(&config("# CONFIG_IP_VS is not set\n")));
        assert_eq!(c.status, Status::Warn);
        assert!(c
            .detail
            .starts_with("no IPVS: swarm service VIPs and the ingress routing mesh"));
        assert!(
            c.detail.contains("--endpoint-mode dnsrr") && c.detail.contains("--publish mode=host")
        );
        assert_eq!(
            c.fix.as_deref(),
            Some("use a kernel with CONFIG_IP_VS (most distribution kernels have it)")
        );
        let m = check_ipvs(false, Some(&config("CONFIG_IP_VS=m\n")));
        assert!(m.fix.unwrap().starts_with("modprobe ip_vs"));
    }
}
