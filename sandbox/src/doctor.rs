//! Host checks for `sandpit doctor`: can this machine run nodes, in which isolation mode, and
//! what to do about what is missing.
//!
//! Background. A node needs, from the host kernel: overlayfs, ext4 (the loop image under
//! `/var/lib/docker`), devpts, mqueue and tmpfs; the cgroup v1 hierarchies (`cgroups.rs` puts
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

use std::collections::HashMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{pipe2, Pid};
use serde::Serialize;

use crate::cgroups::HIERARCHIES;
use crate::config::{Isolation, MirrorSource, NodeLimits, RegistryConfig};
use crate::kernfs::errno_of;
use crate::registry::Layout;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, with a limitation the user should know about.
    Warn,
    /// Nodes (or the isolation mode in question) cannot work.
    Fail,
}

/// One host check: a short name, its outcome, one line of detail, and the fix when not Ok.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Where the runtime would keep its files; the same values as its configuration.
pub struct Input {
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
    pub default_image: String,
    pub cgroup_root: PathBuf,
    /// The registries `sandpit serve` would run with this configuration.
    pub registry: Option<RegistryConfig>,
    /// Where a running owner's registries listen (`<runtime state>/registry`).
    pub registry_dir: PathBuf,
}

// Check names, also what `supported_isolation` keys on.
const ROOT: &str = "root";
const KERNEL: &str = "kernel";
const FILESYSTEMS: &str = "filesystems";
const USERNS: &str = "user-namespaces";
const BRIDGE: &str = "bridge";
const VETH: &str = "veth";
const VXLAN: &str = "vxlan";
const IPVS: &str = "ipvs";
const IDMAP: &str = "idmapped-mounts";
const CGROUPS: &str = "cgroups";
const TOOLS: &str = "host-tools";
const BRIDGE_NF: &str = "bridge-netfilter";
const BASE_IMAGE: &str = "base-image";
const DISK: &str = "disk-space";
const MEMORY: &str = "memory";
const MIRROR: &str = "registry-mirror";

/// The seed images a learner's first commands expect (`ops/seed/build`).
const SEED_IMAGES: &[&str] = &[
    "hello-world",
    "busybox",
    "debian",
    "nginx",
    "redis",
    "python",
    "postgres",
];

const GIB: u64 = 1 << 30;
const DISK_WARN_BYTES: u64 = 20 * GIB;
const DISK_FAIL_BYTES: u64 = 2 * GIB;

/// The map the idmapped-mount probe gives its throw-away user namespace.
const PROBE_ID_MAP: &str = "0 1000000 65536";

const IDMAP_FIX: &str = "use Linux >= 5.12 with idmapped mount support on the filesystem of \
                         the images dir, or run with --isolation rootful (trusted users only)";

/// Filesystems a node mounts, with the kernel option that provides each.
const FILESYSTEMS_NEEDED: &[(&str, &str)] = &[
    ("overlay", "OVERLAY_FS"),
    ("ext4", "EXT4_FS"),
    ("cgroup", "CGROUPS"),
    ("devpts", "UNIX98_PTYS"),
    ("mqueue", "POSIX_MQUEUE"),
    ("tmpfs", "TMPFS"),
];

/// Host binaries the runtime runs, with their Debian packages.
const TOOLS_NEEDED: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("mount", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("iptables", "iptables"),
    ("iptables-restore", "iptables"),
    ("losetup", "util-linux"),
];
const TOOLS_FIX: &str = "apt-get install iproute2 util-linux mount e2fsprogs iptables";

/// Runs every check against this host. Call it before the process starts threads if
/// possible; the idmapped-mount probe forks, but its child is async-signal-safe either way.
pub fn run(input: &Input) -> Vec<Check> {
    let euid = nix::unistd::geteuid().as_raw();
    let release = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = read_trimmed("/proc/sys/kernel/version").unwrap_or_default();
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
            read_trimmed("/proc/sys/user/max_user_namespaces").as_deref(),
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
        let dir = idmap_probe_dir(input);
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
        read_trimmed("/proc/sys/net/bridge/bridge-nf-call-iptables").as_deref(),
        forward.as_deref(),
    ));

    checks.push(check_base_image(&input.images_dir, &input.default_image));

    let disk_dir = nearest_existing(&input.state_dir);
    // The casts matter on 32-bit targets, where both are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    let free = nix::sys::statvfs::statvfs(&disk_dir)
        .map(|s| s.blocks_available() as u64 * s.fragment_size() as u64);
    checks.push(check_disk(&input.state_dir, &disk_dir, free));

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
        mirror_answers(&Layout::at(&input.registry_dir).files("mirror").socket),
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

fn read_trimmed(path: &str) -> Option<String> {
    crate::kernfs::read_trimmed(path).ok()
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

// ---- kernel build options ----

/// Kernel build options (`CONFIG_` prefix stripped) and where they were read from.
struct KernelConfig {
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

fn read_kernel_config(release: &str) -> Option<KernelConfig> {
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

// ---- the checks ----

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

/// `(major, minor)` of a release string such as `6.18.44-fc-v669`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_kernel(release: &str, version: &str, cfg: Option<&KernelConfig>) -> Check {
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

fn check_filesystems(proc_filesystems: &str, cfg: Option<&KernelConfig>) -> Check {
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

fn check_userns(max_user_namespaces: Option<&str>, cfg: Option<&KernelConfig>) -> Check {
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

fn check_bridge(module_dir: bool, cfg: Option<&KernelConfig>) -> Check {
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
fn check_link_kind(name: &str, module_dir: bool, cfg: Option<&KernelConfig>) -> Check {
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

fn check_ipvs(proc_ip_vs: bool, cfg: Option<&KernelConfig>) -> Check {
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

// ---- idmapped mounts ----

/// A failed step of the idmapped-mount probe.
#[derive(Debug)]
struct ProbeError {
    step: String,
    errno: Errno,
}

fn step(step: impl Into<String>) -> impl FnOnce(Errno) -> ProbeError {
    let step = step.into();
    move |errno| ProbeError { step, errno }
}

/// Where to try an idmapped mount: support depends on the filesystem, so the images' own
/// if they exist yet.
fn idmap_probe_dir(input: &Input) -> PathBuf {
    let rootfs = input.images_dir.join(&input.default_image).join("rootfs");
    [rootfs, input.images_dir.clone()]
        .into_iter()
        .find(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

fn idmap_check(dir: &Path, result: Result<(), ProbeError>) -> Check {
    match result {
        Ok(()) => Check::ok(
            IDMAP,
            format!("an idmapped read-only mount of {} works", dir.display()),
        ),
        Err(e) => Check::fail(IDMAP, format!("{}: {}", e.step, e.errno), IDMAP_FIX),
    }
}

/// Makes a real idmapped mount of `dir` (detached, gone when its fd closes) through a
/// throw-away user namespace: the same calls the runtime makes for a node's lower layer.
fn probe_idmapped_mount(dir: &Path) -> Result<(), ProbeError> {
    // ready: the child reports unshare's result; go: the child waits on it until released.
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(step("pipe"))?;
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(step("pipe"))?;
    let child = crate::sys::fork_userns_holder(&ready_w, &go_r).map_err(step("fork"))?;
    drop(ready_w);
    drop(go_r);
    let result = idmap_through(child, &ready_r, dir);
    // Release the child, and make sure it is gone and reaped whatever happened above.
    drop(go_w);
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
    result
}

fn idmap_through(child: Pid, ready: &OwnedFd, dir: &Path) -> Result<(), ProbeError> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(ready, &mut buf[got..]) {
            Ok(0) => return Err(step("wait for the user-namespace child")(Errno::ECHILD)),
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(step("read from the user-namespace child")(errno)),
        }
    }
    match i32::from_ne_bytes(buf) {
        0 => {}
        code => return Err(step("unshare(CLONE_NEWUSER)")(Errno::from_raw(code))),
    }
    // Host root writes the maps; the child needs no privileges of its own.
    for map in ["uid_map", "gid_map"] {
        let path = format!("/proc/{child}/{map}");
        fs::write(&path, PROBE_ID_MAP).map_err(|e| step(format!("write {path}"))(errno_of(&e)))?;
    }
    let ns_path = format!("/proc/{child}/ns/user");
    let userns: OwnedFd = fs::File::open(&ns_path)
        .map_err(|e| step(format!("open {ns_path}"))(errno_of(&e)))?
        .into();
    let tree =
        crate::sys::open_tree_clone(dir).map_err(step(format!("open_tree {}", dir.display())))?;
    crate::sys::set_idmap_readonly(&tree, &userns).map_err(step(format!(
        "mount_setattr(MOUNT_ATTR_IDMAP) on {}",
        dir.display()
    )))
}

// ---- cgroups ----

/// A mounted cgroup filesystem, from `/proc/self/mountinfo`.
#[derive(Debug, PartialEq)]
struct CgroupMount {
    mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    fstype: String,
    /// Super options: the v1 controllers (`memory`, `cpu,cpuacct`) or `name=systemd`.
    options: Vec<String>,
}

fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <type> <src> <super opts>"
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?.replace("\\040", " ");
            let mut right = right.split(' ');
            let fstype = right.next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let options = right.nth(1).unwrap_or("").split(',').map(str::to_string);
            Some(CgroupMount {
                mount_point: mount_point.into(),
                fstype: fstype.into(),
                options: options.collect(),
            })
        })
        .collect()
}

/// Whether `m` is the hierarchy `h` of [`HIERARCHIES`].
fn mount_is(m: &CgroupMount, h: &str) -> bool {
    match h {
        "unified" => m.fstype == "cgroup2",
        "systemd" => m.fstype == "cgroup" && m.options.iter().any(|o| o == "name=systemd"),
        c => m.fstype == "cgroup" && m.options.iter().any(|o| o == c),
    }
}

fn mount_command(h: &str, path: &Path) -> String {
    let p = path.display();
    match h {
        "unified" => format!("mkdir -p {p} && mount -t cgroup2 none {p}"),
        "systemd" => format!("mkdir -p {p} && mount -t cgroup -o none,name=systemd cgroup {p}"),
        c => format!("mkdir -p {p} && mount -t cgroup -o {c} cgroup {p}"),
    }
}

/// `root` and each hierarchy's directory, symlinks resolved (co-mounted `cpu,cpuacct`).
fn check_cgroups(root: &Path, mounts: &[CgroupMount], hierarchies: &[(&str, PathBuf)]) -> Check {
    if mounts
        .iter()
        .any(|m| m.mount_point == root && m.fstype == "cgroup2")
    {
        return Check::fail(
            CGROUPS,
            format!(
                "cgroup v2 only ({} is the unified hierarchy): sandpit needs the cgroup v1 \
                 hierarchies, v2-only hosts are not supported yet",
                root.display()
            ),
            "boot with systemd.unified_cgroup_hierarchy=0 on the kernel command line \
             (systemd >= 256 also needs SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1)",
        );
    }
    let missing: Vec<&(&str, PathBuf)> = hierarchies
        .iter()
        .filter(|(h, path)| {
            !mounts
                .iter()
                .any(|m| m.mount_point == *path && mount_is(m, h))
        })
        .collect();
    let names: Vec<&str> = hierarchies.iter().map(|(h, _)| *h).collect();
    if missing.is_empty() {
        return Check::ok(
            CGROUPS,
            format!(
                "cgroup v1 hybrid: {} mounted under {}",
                names.join(", "),
                root.display()
            ),
        );
    }
    if missing.len() == hierarchies.len() {
        return Check::fail(
            CGROUPS,
            format!("no cgroup v1 hierarchies mounted under {}", root.display()),
            "boot with systemd.unified_cgroup_hierarchy=0, or mount each hierarchy: `mount -t \
             cgroup -o memory cgroup /sys/fs/cgroup/memory` and so on",
        );
    }
    let missing_names: Vec<&str> = missing.iter().map(|(h, _)| *h).collect();
    let commands: Vec<String> = missing.iter().map(|(h, p)| mount_command(h, p)).collect();
    Check::fail(
        CGROUPS,
        format!(
            "not mounted under {}: {} (every node gets a cgroup in each of {})",
            root.display(),
            missing_names.join(", "),
            names.join(", ")
        ),
        format!(
            "{}; or boot with systemd.unified_cgroup_hierarchy=0",
            commands.join("; ")
        ),
    )
}

// ---- host tools ----

/// `PATH` plus the sbin directories, which a service's or sudo's PATH may lack.
fn search_dirs(path: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    dirs
}

fn find_tool(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn check_tools(found: &[(&str, Option<PathBuf>)]) -> Check {
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(t, _)| *t)
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = found.iter().map(|(t, _)| *t).collect();
        Check::ok(TOOLS, format!("found {}", names.join(", ")))
    } else {
        Check::fail(
            TOOLS,
            format!(
                "not found in PATH or the sbin directories: {}",
                missing.join(", ")
            ),
            TOOLS_FIX,
        )
    }
}

// ---- bridge netfilter ----

/// The policy of the FORWARD chain from `iptables -S FORWARD` (`-P FORWARD DROP`).
fn parse_forward_policy(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("-P FORWARD "))
        .map(|p| p.trim().to_string())
}

/// Informational: with `br_netfilter` on and a DROP policy, bridged traffic between nodes
/// would be dropped, which the runtime's own ACCEPT rules take care of.
fn check_bridge_netfilter(nf_call_iptables: Option<&str>, forward_policy: Option<&str>) -> Check {
    let nf = match nf_call_iptables {
        Some(v) => format!("bridge-nf-call-iptables={v}"),
        None => "br_netfilter not loaded".to_string(),
    };
    let policy = forward_policy.unwrap_or("unknown");
    Check::ok(
        BRIDGE_NF,
        format!(
            "{nf}, FORWARD policy {policy}: fine either way, sandpit adds its own ACCEPT rules \
             for its bridges"
        ),
    )
}

// ---- base image ----

fn check_base_image(images_dir: &Path, name: &str) -> Check {
    let fix = format!("ops/setup (or ops/image/build-base {name})");
    let dir = images_dir.join(name);
    // Debian's docker.io installs /usr/sbin/dockerd, upstream packages /usr/bin/dockerd.
    // Not followed: links in the image point into the image, not the host.
    let dockerd = ["usr/bin/dockerd", "usr/sbin/dockerd"]
        .into_iter()
        .find(|p| fs::symlink_metadata(dir.join("rootfs").join(p)).is_ok());
    let Some(dockerd) = dockerd else {
        return Check::fail(
            BASE_IMAGE,
            format!(
                "no base image {name:?}: {} has no usr/bin/dockerd or usr/sbin/dockerd",
                dir.join("rootfs").display()
            ),
            fix,
        );
    };
    let manifest_path = dir.join("manifest.json");
    let manifest = fs::read_to_string(&manifest_path)
        .map_err(|e| format!("read {}: {}", manifest_path.display(), errno_of(&e)))
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| format!("parse {}: {e}", manifest_path.display()))
        });
    match manifest {
        Err(e) => Check::fail(BASE_IMAGE, e, fix),
        Ok(m) => {
            let field = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            let mut recipe = field("recipe");
            recipe.truncate(12);
            Check::ok(
                BASE_IMAGE,
                format!(
                    "{name}: recipe {recipe}, built {}, {dockerd} present",
                    field("built_at")
                ),
            )
        }
    }
}

// ---- registry mirror ----

/// Whether a registry answers `GET /v2/` on `socket` (a running `sandpit serve`'s mirror).
/// The doctor runs before any async runtime exists, so the probe brings its own.
fn mirror_answers(socket: &Path) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        let probe = async {
            let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
            let resp = crate::unix_http::get(stream, "mirror", "/v2/").await.ok()?;
            Some(resp.status() == hyper::StatusCode::OK)
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    })
}

fn check_registry(
    cfg: Option<&RegistryConfig>,
    exe_found: bool,
    seed_images: Option<Vec<String>>,
    running: bool,
) -> Check {
    let Some(cfg) = cfg else {
        return Check::warn(
            MIRROR,
            "off (--no-registry): nodes can pull no images and have no session registry",
            "start without --no-registry",
        );
    };
    if !exe_found {
        return Check::fail(
            MIRROR,
            format!("{} not found", cfg.exe.display()),
            "apt-get install docker-registry (ops/setup does)",
        );
    }
    let state = if running {
        "running"
    } else {
        "not running (sandpit serve starts it)"
    };
    match &cfg.mirror {
        MirrorSource::PullThrough {
            upstream, username, ..
        } => Check::ok(
            MIRROR,
            format!(
                "{state}; a pull-through cache of {upstream} ({})",
                if username.is_some() {
                    "with credentials"
                } else {
                    "anonymous: Docker Hub allows about 10 pulls per hour per address"
                }
            ),
        ),
        MirrorSource::Seeded(store) => {
            let fix = "ops/seed/build && ops/seed/publish (ops/setup does)";
            let Some(images) = seed_images else {
                return Check::fail(
                    MIRROR,
                    format!("no seed image store at {}", store.display()),
                    fix,
                );
            };
            let names: Vec<&str> = images
                .iter()
                .map(|i| i.strip_prefix("library/").unwrap_or(i))
                .collect();
            let missing: Vec<&str> = SEED_IMAGES
                .iter()
                .copied()
                .filter(|want| !names.iter().any(|n| n.split(':').next() == Some(*want)))
                .collect();
            let detail = format!(
                "{state}; seed images in {}: {}",
                store.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(" ")
                }
            );
            if missing.is_empty() {
                Check::ok(MIRROR, detail)
            } else {
                Check::warn(
                    MIRROR,
                    format!("{detail}; missing: {}", missing.join(" ")),
                    fix,
                )
            }
        }
    }
}

// ---- disk and memory ----

/// `path` or its closest existing ancestor (the state dir may not exist before first use).
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

fn disk_status(free_bytes: u64) -> Status {
    if free_bytes < DISK_FAIL_BYTES {
        Status::Fail
    } else if free_bytes < DISK_WARN_BYTES {
        Status::Warn
    } else {
        Status::Ok
    }
}

fn check_disk(state_dir: &Path, measured: &Path, free: Result<u64, Errno>) -> Check {
    let fix = format!(
        "free space on the filesystem of {} or move the state dir to a larger one (nodes' \
         /var/lib/docker images are sparse and grow with use)",
        measured.display()
    );
    let free = match free {
        Ok(f) => f,
        Err(errno) => {
            return Check::warn(
                DISK,
                format!("statvfs {}: {errno}", measured.display()),
                fix,
            )
        }
    };
    let detail = format!(
        "{} free for {} (measured at {})",
        gib(free),
        state_dir.display(),
        measured.display()
    );
    match disk_status(free) {
        Status::Ok => Check::ok(DISK, detail),
        Status::Warn => Check::warn(DISK, format!("{detail}: below 20 GiB"), fix),
        Status::Fail => Check::fail(DISK, format!("{detail}: below 2 GiB"), fix),
    }
}

/// `MemAvailable` in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

fn check_memory(meminfo: &str) -> Check {
    let node = NodeLimits::default().memory_bytes;
    match parse_mem_available(meminfo) {
        Some(avail) => Check::ok(
            MEMORY,
            format!(
                "{} available: {} nodes fit at the default {} limit (an idle node uses ~40 MiB)",
                gib(avail),
                avail / node,
                gib(node)
            ),
        ),
        None => Check::warn(
            MEMORY,
            "no MemAvailable in /proc/meminfo",
            "check /proc/meminfo",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;

    fn config(text: &str) -> KernelConfig {
        KernelConfig {
            source: "test".into(),
            options: parse_kernel_config(text),
        }
    }

    #[test]
    fn the_mirror_check_names_its_state_and_what_is_missing() {
        let seeded = RegistryConfig {
            exe: "/usr/bin/docker-registry".into(),
            mirror: MirrorSource::Seeded("/i/registry".into()),
        };
        let all: Vec<String> = SEED_IMAGES
            .iter()
            .map(|n| format!("library/{n}:latest"))
            .collect();
        let c = check_registry(Some(&seeded), true, Some(all.clone()), true);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.detail.starts_with(
                "running; seed images in /i/registry: hello-world:latest busybox:latest"
            ),
            "{}",
            c.detail
        );

        let some = all[1..].to_vec();
        let c = check_registry(Some(&seeded), true, Some(some), false);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("not running") && c.detail.ends_with("missing: hello-world"));

        let c = check_registry(Some(&seeded), true, None, false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("ops/seed/publish"));
        let c = check_registry(Some(&seeded), false, Some(all), false);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            check_registry(None, false, None, false).status,
            Status::Warn
        );

        let cache = RegistryConfig {
            exe: "/usr/bin/docker-registry".into(),
            mirror: MirrorSource::PullThrough {
                upstream: "https://registry-1.docker.io".into(),
                username: None,
                password: None,
            },
        };
        let c = check_registry(Some(&cache), true, None, false);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("anonymous"), "{}", c.detail);
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

    #[test]
    fn idmap_failure_names_step_and_errno() {
        let c = idmap_check(
            Path::new("/img"),
            Err(ProbeError {
                step: "mount_setattr(MOUNT_ATTR_IDMAP) on /img".into(),
                errno: Errno::EINVAL,
            }),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(c
            .detail
            .starts_with("mount_setattr(MOUNT_ATTR_IDMAP) on /img: EINVAL"));
        assert_eq!(c.fix.as_deref(), Some(IDMAP_FIX));
        assert_eq!(idmap_check(Path::new("/img"), Ok(())).status, Status::Ok);
    }

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /proc rw - proc proc rw
";

    fn hierarchies(root: &str) -> Vec<(&'static str, PathBuf)> {
        HIERARCHIES
            .iter()
            .map(|h| (*h, Path::new(root).join(h)))
            .collect()
    }

    #[test]
    fn cgroup_mounts_are_parsed() {
        let m = parse_cgroup_mounts(MOUNTINFO);
        assert_eq!(m.len(), 10);
        assert_eq!(
            m[3],
            CgroupMount {
                mount_point: "/sys/fs/cgroup/memory".into(),
                fstype: "cgroup".into(),
                options: vec!["rw".into(), "memory".into()],
            }
        );
        assert_eq!(m[9].fstype, "cgroup2");
    }

    #[test]
    fn cgroup_classification() {
        let root = Path::new("/sys/fs/cgroup");
        let mounts = parse_cgroup_mounts(MOUNTINFO);
        assert_eq!(
            check_cgroups(root, &mounts, &hierarchies("/sys/fs/cgroup")).status,
            Status::Ok
        );

        // pids and devices missing.
        let partial: String = MOUNTINFO
            .lines()
            .filter(|l| !l.contains("pids") && !l.contains("devices"))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = check_cgroups(
            root,
            &parse_cgroup_mounts(&partial),
            &hierarchies("/sys/fs/cgroup"),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .starts_with("not mounted under /sys/fs/cgroup: devices, pids"),
            "{}",
            c.detail
        );
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("mount -t cgroup -o pids cgroup /sys/fs/cgroup/pids"),
            "{fix}"
        );
        assert!(fix.contains("systemd.unified_cgroup_hierarchy=0"));

        // Co-mounted cpu,cpuacct: both names resolve to one mount.
        let co = "1 0 0:1 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let mut text: String = MOUNTINFO
            .lines()
            .filter(|l| !l.contains("/cpu ") && !l.contains("/cpuacct "))
            .map(|l| format!("{l}\n"))
            .collect();
        text += co;
        let mut hs = hierarchies("/sys/fs/cgroup");
        hs[0].1 = "/sys/fs/cgroup/cpu,cpuacct".into();
        hs[1].1 = "/sys/fs/cgroup/cpu,cpuacct".into();
        assert_eq!(
            check_cgroups(root, &parse_cgroup_mounts(&text), &hs).status,
            Status::Ok
        );

        // v2-only.
        let v2 = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let c = check_cgroups(
            root,
            &parse_cgroup_mounts(v2),
            &hierarchies("/sys/fs/cgroup"),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("v2-only hosts are not supported yet"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn tools_are_found_and_missing_ones_named() {
        let t = TempDir::new("tools");
        let exe = t.0.join("ip");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(t.0.join("losetup"), "not executable").unwrap();
        let dirs = vec![t.0.clone()];
        assert_eq!(find_tool(&dirs, "ip"), Some(exe.clone()));
        assert_eq!(find_tool(&dirs, "losetup"), None);
        let c = check_tools(&[("ip", Some(exe)), ("losetup", None)]);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.detail,
            "not found in PATH or the sbin directories: losetup"
        );
        assert_eq!(c.fix.as_deref(), Some(TOOLS_FIX));
        let dirs = search_dirs(Some(std::ffi::OsStr::new("/opt/x:/usr/bin")));
        assert_eq!(dirs[0], Path::new("/opt/x"));
        assert!(dirs.contains(&PathBuf::from("/usr/sbin")));
        assert_eq!(
            dirs.iter().filter(|d| *d == Path::new("/usr/bin")).count(),
            1
        );
    }

    #[test]
    fn forward_policy_is_informational() {
        assert_eq!(
            parse_forward_policy("-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n").as_deref(),
            Some("DROP")
        );
        assert_eq!(parse_forward_policy(""), None);
        let c = check_bridge_netfilter(Some("1"), Some("DROP"));
        assert_eq!(c.status, Status::Ok);
        assert!(c
            .detail
            .starts_with("bridge-nf-call-iptables=1, FORWARD policy DROP"));
        assert_eq!(check_bridge_netfilter(None, None).status, Status::Ok);
    }

    #[test]
    fn base_image() {
        let t = TempDir::new("image");
        let c = check_base_image(&t.0, "bookworm");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some("ops/setup (or ops/image/build-base bookworm)")
        );
        let bin = t.0.join("bookworm/rootfs/usr/bin");
        fs::create_dir_all(&bin).unwrap();
        // A link in the image is not followed (its target is inside the image).
        std::os::unix::fs::symlink("/nonexistent/dockerd", bin.join("dockerd")).unwrap();
        let c = check_base_image(&t.0, "bookworm");
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("manifest.json"), "{}", c.detail);
        fs::write(t.0.join("bookworm/manifest.json"), "{not json").unwrap();
        assert_eq!(check_base_image(&t.0, "bookworm").status, Status::Fail);
        fs::write(
            t.0.join("bookworm/manifest.json"),
            r#"{"name":"bookworm","recipe":"5cddf54874e9ea3e6cd6","built_at":"2026-11-24T02:47:00Z"}"#,
        )
        .unwrap();
        let c = check_base_image(&t.0, "bookworm");
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
        assert_eq!(
            c.detail,
            "bookworm: recipe 5cddf54874e9, built 2026-11-24T02:47:00Z, usr/bin/dockerd present"
        );
    }

    #[test]
    fn disk_thresholds() {
        assert_eq!(disk_status(100 * GIB), Status::Ok);
        assert_eq!(disk_status(20 * GIB), Status::Ok);
        assert_eq!(disk_status(20 * GIB - 1), Status::Warn);
        assert_eq!(disk_status(2 * GIB), Status::Warn);
        assert_eq!(disk_status(2 * GIB - 1), Status::Fail);
        let c = check_disk(Path::new("/s/state"), Path::new("/s"), Ok(GIB));
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.starts_with("1.0 GiB free for /s/state"),
            "{}",
            c.detail
        );
        assert_eq!(
            nearest_existing(Path::new("/proc/self/no/such/dir")),
            Path::new("/proc/self")
        );
    }

    #[test]
    fn memory_is_informational() {
        let meminfo = "MemTotal:       32000000 kB\nMemFree: 1 kB\nMemAvailable:   24382148 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(24_382_148 * 1024));
        let c = check_memory(meminfo);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.detail.starts_with("23.3 GiB available: 11 nodes fit"),
            "{}",
            c.detail
        );
        assert_eq!(check_memory("").status, Status::Warn);
    }

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
            default_image: "bookworm".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            registry: Some(RegistryConfig {
                exe: "/usr/bin/docker-registry".into(),
                mirror: MirrorSource::Seeded("/var/lib/sandpit/images/registry".into()),
            }),
            registry_dir: "/var/lib/sandpit/runtime/registry".into(),
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
        assert_eq!(checks.len(), 16);
        // The probe's child was killed and reaped (a zombie would still be listed here;
        // other test threads' children are not).
        let children = fs::read_to_string("/proc/thread-self/children").unwrap();
        assert_eq!(children.trim(), "", "children left by the idmap probe");
    }
}
