//! The command line: `sandpit doctor` on this host, clear messages for bad options and for a
//! state directory that nodes cannot reach, and `network rm --all` taking an instance off the
//! host.

use std::process::Command;

use sandbox::Runtime;
use sandpit_tests::{runtime_args, sandpit_bin, test_config, CleanupGuard, TestRuntime};

#[test]
fn doctor_reports_a_usable_host_and_the_ipvs_consequences() {
    let out = Command::new(sandpit_bin()).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "doctor failed:\n{text}");
    assert!(
        text.contains("isolation: this host supports userns"),
        "{text}"
    );
    assert!(text.contains("idmapped-mounts"), "{text}");
    assert!(text.contains("base-image"), "{text}");
    // These machines have no IPVS: the doctor must say what that means for swarm.
    if !std::path::Path::new("/proc/net/ip_vs").exists() {
        assert!(text.contains("--endpoint-mode dnsrr"), "{text}");
        assert!(text.contains("mode=host"), "{text}");
    }
}

/// A state directory below one that other users cannot enter (`mktemp -d` makes 0700 ones)
/// would fail every node with EACCES inside it: `serve` refuses to start and says how to fix
/// it, and `doctor` says the same.
#[test]
fn a_state_directory_nodes_cannot_reach_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let (cfg, _claim) = test_config();
    let _cleanup = CleanupGuard(cfg.clone());
    let top = cfg.state_dir.parent().expect("the test's directory");
    let private = top.join("private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = private.join("state");
    let serve = Command::new(sandpit_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-registry"])
        .arg("--state-dir")
        .arg(&state)
        .args(["--prefix", &cfg.prefix])
        .args(["--subnet-pool", &cfg.subnet_pool.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&serve.stderr);
    assert!(!serve.status.success(), "serve started: {e}");
    assert!(e.contains("nodes cannot reach their directory"), "{e}");
    assert!(e.contains("has mode 0700"), "{e}");
    assert!(
        e.contains(&format!("chmod o+x {}", private.display())),
        "{e}"
    );
    let doctor = Command::new(sandpit_bin())
        .arg("doctor")
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("state-dir") && l.contains("has mode 0700")),
        "{text}"
    );
    assert!(
        text.contains(&format!("chmod o+x {}", private.display())),
        "{text}"
    );
}

#[test]
fn bad_options_say_what_to_use() {
    let run = |args: &[&str]| {
        let out = Command::new(sandpit_bin()).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["node", "ls", "--prefix", "Bad-Prefix"]);
    assert!(e.contains("1 to 8 characters"), "{e}");
    let e = run(&["node", "ls", "--isolation", "vm"]);
    assert!(e.contains("\"userns\" or \"rootful\""), "{e}");
    let e = run(&["node", "ls", "--subnet-pool", "10.1.2.3/16"]);
    assert!(
        e.contains("10.1.0.0/16"),
        "suggests the network address: {e}"
    );
}

/// A stopped instance leaves its nodes running and its parent cgroups in place (the next start
/// adopts them); `network rm --all` removes every network, node and host object of its prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_rm_all_takes_an_instance_off_the_host() {
    let (cfg, claim) = test_config();
    let _cleanup = CleanupGuard(cfg.clone());
    let inits: Vec<i32> = {
        let mut t = TestRuntime::open(cfg.clone(), ()).await;
        let mut nodes = t.session("a", 1).await;
        nodes.extend(t.session("b", 1).await);
        drop(t.rt.take()); // close without destroying
        nodes.iter().map(|n| n.init_pid.expect("running")).collect()
    };
    assert!(!Runtime::leftovers(&cfg).await.is_empty());
    network_rm_all(&cfg, inits);
    assert_eq!(Runtime::leftovers(&cfg).await, Vec::<String>::new());
    drop(claim);
}

/// What an owner killed mid-request leaves with no record (a node's cgroup and its processes, a
/// mount below the state directory, a bridge, a veth, firewall chains) is removed when the
/// runtime starts again, without touching the recorded node, and by `network rm --all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_without_a_record_are_swept_at_start_and_by_network_rm_all() {
    let (cfg, claim) = test_config();
    let _cleanup = CleanupGuard(cfg.clone());
    let mut t = TestRuntime::open(cfg.clone(), ()).await;
    let node = t.session("a", 1).await.remove(0);
    let init = node.init_pid.expect("running");
    drop(t.rt.take()); // the owner is gone; its node runs on

    let planted = Stray::plant(&cfg);
    let left = Runtime::leftovers(&cfg).await.join("\n");
    for name in planted.names() {
        assert!(left.contains(&name), "{name} is not on the host:\n{left}");
    }
    // A restart keeps the recorded node and removes the rest.
    let t = TestRuntime::open(cfg.clone(), ()).await;
    planted.gone().await;
    assert_eq!(t.ok(&node, "echo adopted").await.trim(), "adopted");
    let mut t = t;
    drop(t.rt.take());

    // Again, for `network rm --all`.
    let planted = Stray::plant(&cfg);
    network_rm_all(&cfg, vec![init]);
    planted.gone().await;
    assert_eq!(Runtime::leftovers(&cfg).await, Vec::<String>::new());
    drop(claim);
}

/// Runs `sandpit network rm --all` on `cfg`, which must succeed. The node inits are this
/// process's children (it ran their runtime): it reaps them as the command kills them, as a
/// server's parent (init or a supervisor) would.
fn network_rm_all(cfg: &sandbox::RuntimeConfig, inits: Vec<i32>) {
    let reapers: Vec<_> = inits
        .into_iter()
        .map(|pid| {
            std::thread::spawn(move || {
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)
            })
        })
        .collect();
    let out = Command::new(sandpit_bin())
        .args(["network", "rm", "--all", "--no-registry"])
        .args(runtime_args(cfg))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for r in reapers {
        r.join().unwrap().expect("reap a node init");
    }
}

/// Host objects named like a runtime's, with no record: made by hand, as a killed owner would
/// have left them.
struct Stray {
    cfg: sandbox::RuntimeConfig,
    sleeper: std::process::Child,
}

impl Stray {
    fn plant(cfg: &sandbox::RuntimeConfig) -> Stray {
        let sh = |script: String| {
            let out = Command::new("sh").args(["-c", &script]).output().unwrap();
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let (p, chain) = (&cfg.prefix, format!("{}-7E-F", cfg.prefix.to_uppercase()));
        sh(format!(
            "ip link add {p}b7e type bridge && ip link add {p}7ev2 type veth peer name {p}7ev3 && \
             iptables -w -N {chain} && iptables -w -A FORWARD -i {p}b7e -j {chain}"
        ));
        let mnt = cfg.state_dir.join("stray-mount");
        std::fs::create_dir_all(&mnt).unwrap();
        sh(format!("mount -t tmpfs stray {}", mnt.display()));
        let sleeper = Command::new("sleep").arg("600").spawn().unwrap();
        for h in ["pids", "memory"] {
            let cg = cfg
                .cgroup_root
                .join(h)
                .join(&cfg.cgroup_parent)
                .join("stray");
            std::fs::create_dir_all(&cg).unwrap();
            std::fs::write(cg.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
        }
        Stray {
            cfg: cfg.clone(),
            sleeper,
        }
    }

    /// What the leak scan shows of them.
    fn names(&self) -> Vec<String> {
        let p = &self.cfg.prefix;
        vec![
            format!("link {p}b7e"),
            format!("link {p}7ev2"),
            format!("link {p}7ev3"),
            format!("{}-7E-F", p.to_uppercase()),
            format!("{}/stray", self.cfg.cgroup_parent),
            format!("mount {}", self.cfg.state_dir.join("stray-mount").display()),
            format!("process {} sleep 600", self.sleeper.id()),
        ]
    }

    /// Asserts that none of them is left; the sleeper was killed with its cgroup.
    async fn gone(mut self) {
        let status = self.sleeper.wait().unwrap();
        assert!(!status.success(), "the stray process was killed: {status}");
        let left = Runtime::leftovers(&self.cfg).await.join("\n");
        for name in self.names().into_iter().take(6) {
            assert!(!left.contains(&name), "{name} is still there:\n{left}");
        }
    }
}
