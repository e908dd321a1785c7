//! The command line: `sandpit doctor` on this host, and clear messages for bad options.

use std::process::Command;

use sandpit_tests::sandpit_bin;

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
