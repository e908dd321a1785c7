//! The host firewall of a session network: what may cross its bridge and what nodes may reach
//! on the host.
//!
//! Kernel background. iptables keeps rules in tables (`filter`, `nat`) of chains; packets
//! routed through the host traverse `FORWARD`, packets for the host itself `INPUT`, and packets
//! leaving `POSTROUTING` (nat). With `br_netfilter` and `bridge-nf-call-iptables=1` (common on
//! hosts that ran dockerd, and the case here) even frames switched between two ports of one
//! bridge traverse `FORWARD`, as `-i br -o br`, so a FORWARD policy of DROP would cut nodes off
//! from each other. Each network gets its own chains, named by [`chain_name`]:
//!
//! - `F` (filter, jumped to from `FORWARD` for `-i BR` and `-o BR`): accept traffic within the
//!   bridge; with egress, accept traffic out through the host's uplink (the interface of its
//!   default route: never into another bridge or local network) and replies back in; drop
//!   the rest. No other session, no outside.
//! - `I` (filter, jumped to from `INPUT` for `-i BR`): replies to connections the host opened
//!   (the port proxy), the session's DNS server (UDP 53, see `dns.rs`), the allowed host ports
//!   (the registry mirror), both on the gateway address only; every other TCP or UDP attempt
//!   is rejected so that it fails fast, anything else is dropped.
//! - `N` (nat, from `POSTROUTING`, egress only): masquerade the subnet when it leaves the host.
//!
//! Jumps are inserted at position 1 so that they come before a host's DROP rules and DOCKER
//! chains. Changes go through one `iptables-save` and one `iptables-restore --noflush` each:
//! every iptables exec costs milliseconds, and with the nft backend each table's COMMIT is one
//! atomic transaction. With `--noflush`, declaring a chain (`:NAME - [0:0]`) creates it or
//! flushes it if it exists, which makes [`install`] repeatable; old jump rules are found in the
//! listing and deleted in the same transaction.
//!
//! Egress also needs `net.ipv4.ip_forward=1`: [`install`] sets it when egress is on (after the
//! rules are in place) and never touches it otherwise, nor resets it on [`remove`], because
//! other software on the host may rely on it. Rules are IPv4 only: bridges and host veth ends
//! have IPv6 disabled, so nodes have no IPv6 path to the host or beyond.

use tokio::sync::Mutex;

use super::{chain_name, run, NetworkError, Subnet};

/// What the firewall of one session network allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSpec {
    pub prefix: String,
    pub net_index: u32,
    pub bridge: String,
    pub subnet: Subnet,
    /// TCP ports of the host that nodes may connect to.
    pub host_ports: Vec<u16>,
    /// Let nodes reach beyond the host (masqueraded). Off in every test.
    pub egress: bool,
    /// The interface egress leaves through (the host's default route); unused without egress.
    pub uplink: String,
}

/// Serialises read-modify-write cycles of this process on the rule set.
static RULES_LOCK: Mutex<()> = Mutex::const_new(());

struct Chains {
    forward: String,
    input: String,
    nat: String,
}

impl Chains {
    fn of(spec: &FirewallSpec) -> Chains {
        Chains {
            forward: chain_name(&spec.prefix, spec.net_index, 'F'),
            input: chain_name(&spec.prefix, spec.net_index, 'I'),
            nat: chain_name(&spec.prefix, spec.net_index, 'N'),
        }
    }

    fn contains(&self, name: &str) -> bool {
        [&self.forward, &self.input, &self.nat]
            .iter()
            .any(|c| c.as_str() == name)
    }
}

/// What `iptables-save` shows of one network: its chains and the rules that jump to them.
#[derive(Debug, Default, PartialEq)]
struct Existing {
    filter_chains: Vec<String>,
    filter_jumps: Vec<String>,
    nat_chains: Vec<String>,
    nat_jumps: Vec<String>,
}

impl Existing {
    fn is_empty(&self) -> bool {
        *self == Existing::default()
    }

    /// Picks out the chains that `is_ours` names from an `iptables-save` listing. Jumps are kept
    /// as the `-A` lines, which turn into their own `-D` by swapping the command.
    fn scan(save: &str, is_ours: impl Fn(&str) -> bool) -> Existing {
        let mut found = Existing::default();
        let mut table = "";
        for line in save.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim();
                continue;
            }
            let (names, jumps) = match table {
                "filter" => (&mut found.filter_chains, &mut found.filter_jumps),
                "nat" => (&mut found.nat_chains, &mut found.nat_jumps),
                _ => continue,
            };
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or("");
                if is_ours(name) {
                    names.push(name.to_string());
                }
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let from_ours = words.get(1).is_some_and(|c| is_ours(c));
            let to_ours = words
                .windows(2)
                .any(|w| (w[0] == "-j" || w[0] == "-g") && is_ours(w[1]));
            if words.first() == Some(&"-A") && to_ours && !from_ours {
                jumps.push(line.trim().to_string());
            }
        }
        found
    }
}

/// `-A CHAIN rest` as `-D CHAIN rest`.
fn delete_of(append: &str) -> String {
    format!("-D{}", append.strip_prefix("-A").unwrap_or(append))
}

/// The `iptables-restore --noflush` input that installs (or re-installs) the rules of `spec`,
/// replacing whatever `existing` shows of an earlier install.
fn render_install(spec: &FirewallSpec, existing: &Existing) -> String {
    let c = Chains::of(spec);
    let br = &spec.bridge;
    let mut out = String::from("*filter\n");
    out += &format!(":{} - [0:0]\n:{} - [0:0]\n", c.forward, c.input);
    for jump in &existing.filter_jumps {
        out += &format!("{}\n", delete_of(jump));
    }
    let f = &c.forward;
    out += &format!("-A {f} -i {br} -o {br} -j ACCEPT\n");
    if spec.egress {
        // Only through the uplink: a packet to another bridge (another session, another
        // instance, docker0) must not be accepted here before that bridge's own chain sees it.
        let up = &spec.uplink;
        out += &format!("-A {f} -i {br} -o {up} -j ACCEPT\n");
        out += &format!(
            "-A {f} -i {up} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        );
    }
    out += &format!("-A {f} -j DROP\n");
    let i = &c.input;
    out += &format!("-A {i} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    // DNS to this session's server only: not to other host addresses (another session's
    // gateway, a resolver the host runs for itself).
    out += &format!(
        "-A {i} -d {}/32 -p udp --dport 53 -j ACCEPT\n",
        spec.subnet.gateway()
    );
    for port in &spec.host_ports {
        out += &format!(
            "-A {i} -d {}/32 -p tcp --dport {port} -j ACCEPT\n",
            spec.subnet.gateway()
        );
    }
    out += &format!("-A {i} -p tcp -j REJECT --reject-with tcp-reset\n");
    out += &format!("-A {i} -p udp -j REJECT --reject-with icmp-port-unreachable\n");
    out += &format!("-A {i} -j DROP\n");
    out += &format!("-I FORWARD 1 -i {br} -j {f}\n");
    out += &format!("-I FORWARD 1 -o {br} -j {f}\n");
    out += &format!("-I INPUT 1 -i {br} -j {i}\n");
    out += "COMMIT\n";

    let stale_nat = !existing.nat_chains.is_empty() || !existing.nat_jumps.is_empty();
    if spec.egress || stale_nat {
        out += "*nat\n";
        let n = &c.nat;
        if spec.egress {
            out += &format!(":{n} - [0:0]\n");
        }
        for jump in &existing.nat_jumps {
            out += &format!("{}\n", delete_of(jump));
        }
        if spec.egress {
            let net = spec.subnet;
            out += &format!("-A {n} -s {net} -o {} -j MASQUERADE\n", spec.uplink);
            out += &format!("-I POSTROUTING 1 -s {net} -j {n}\n");
        } else {
            // Egress was on in an earlier install and is off now.
            for chain in &existing.nat_chains {
                out += &format!("-F {chain}\n-X {chain}\n");
            }
        }
        out += "COMMIT\n";
    }
    out
}

/// The `iptables-restore --noflush` input that removes what `existing` shows, jumps first (a
/// chain that is still referenced cannot be deleted); `None` when nothing is left.
fn render_remove(existing: &Existing) -> Option<String> {
    if existing.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (table, chains, jumps) in [
        ("filter", &existing.filter_chains, &existing.filter_jumps),
        ("nat", &existing.nat_chains, &existing.nat_jumps),
    ] {
        if chains.is_empty() && jumps.is_empty() {
            continue;
        }
        out += &format!("*{table}\n");
        for jump in jumps {
            out += &format!("{}\n", delete_of(jump));
        }
        for chain in chains {
            out += &format!("-F {chain}\n-X {chain}\n");
        }
        out += "COMMIT\n";
    }
    Some(out)
}

async fn save() -> Result<String, NetworkError> {
    run("iptables-save", &[], None)
        .await
        .map_err(|cause| NetworkError::ListRules { cause })
}

async fn restore(input: &str) -> Result<(), String> {
    run("iptables-restore", &["--noflush", "-w"], Some(input))
        .await
        .map(drop)
}

/// Installs the chains and jumps of `spec`; running it again replaces them. If it fails, what
/// it made is removed again. With egress on it also turns on `net.ipv4.ip_forward`.
pub async fn install(spec: &FirewallSpec) -> Result<(), NetworkError> {
    if spec.egress && spec.uplink.is_empty() {
        return Err(NetworkError::InstallFirewall {
            bridge: spec.bridge.clone(),
            cause: "egress needs a default route on the host, and there is none".into(),
        });
    }
    let _lock = RULES_LOCK.lock().await;
    let existing = Existing::scan(&save().await?, |c| Chains::of(spec).contains(c));
    if let Err(cause) = restore(&render_install(spec, &existing)).await {
        // Each table commits on its own: filter may be in while nat failed.
        let error = NetworkError::InstallFirewall {
            bridge: spec.bridge.clone(),
            cause,
        };
        return Err(error.with_cleanup(remove_locked(spec).await));
    }
    if spec.egress {
        enable_forwarding().await?;
    }
    Ok(())
}

/// Removes the chains and every jump to them. Missing ones are fine.
pub async fn remove(spec: &FirewallSpec) -> Result<(), NetworkError> {
    let _lock = RULES_LOCK.lock().await;
    remove_locked(spec).await
}

async fn remove_locked(spec: &FirewallSpec) -> Result<(), NetworkError> {
    let existing = Existing::scan(&save().await?, |c| Chains::of(spec).contains(c));
    let Some(input) = render_remove(&existing) else {
        return Ok(());
    };
    restore(&input)
        .await
        .map_err(|cause| NetworkError::RemoveFirewall {
            bridge: spec.bridge.clone(),
            cause,
        })
}

/// Removes every chain of `prefix` whose network index `keep` refuses, with the jumps to it:
/// what an owner killed between making a network's rules and recording the network left.
pub async fn remove_unkept(prefix: &str, keep: impl Fn(u32) -> bool) -> Result<(), NetworkError> {
    let _lock = RULES_LOCK.lock().await;
    let existing = Existing::scan(&save().await?, |c| {
        chain_index(c, prefix).is_some_and(|index| !keep(index))
    });
    let Some(input) = render_remove(&existing) else {
        return Ok(());
    };
    restore(&input)
        .await
        .map_err(|cause| NetworkError::RemoveFirewall {
            bridge: format!("{prefix}b*"),
            cause,
        })
}

/// The network index of a chain of `prefix` (`PREFIX-<HEX>-<kind>`).
fn chain_index(word: &str, prefix: &str) -> Option<u32> {
    let rest = word
        .strip_prefix(prefix.to_ascii_uppercase().as_str())?
        .strip_prefix('-')?;
    let (index, kind) = rest.split_once('-')?;
    let upper_hex = index
        .bytes()
        .all(|b| b.is_ascii_digit() || (b.is_ascii_hexdigit() && b.is_ascii_uppercase()));
    if !upper_hex || kind.len() != 1 {
        return None;
    }
    u32::from_str_radix(index, 16).ok()
}

/// Turns on IPv4 forwarding unless it is on: writing the sysctl, even the same value, resets
/// every interface's IPv4 settings to host or router defaults.
async fn enable_forwarding() -> Result<(), NetworkError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let current = tokio::fs::read_to_string(PATH)
        .await
        .map_err(|source| NetworkError::EnableForwarding { source })?;
    if current.trim() != "1" {
        tracing::info!("enabling net.ipv4.ip_forward for node egress");
        tokio::fs::write(PATH, "1")
            .await
            .map_err(|source| NetworkError::EnableForwarding { source })?;
    }
    Ok(())
}

/// Whether an iptables word names something of `prefix`: one of its chains
/// (`PREFIX-<hex>-<kind>`), one of its bridges (`prefixb<hex>`) or all of them (`prefixb+`).
fn names_ours(word: &str, prefix: &str) -> bool {
    // Chains spell the index in upper case, bridges in lower case.
    let is_hex = |s: &str, upper: bool| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_digit() || (b.is_ascii_hexdigit() && b.is_ascii_uppercase() == upper)
            })
    };
    let upper = prefix.to_ascii_uppercase();
    if let Some(rest) = word
        .strip_prefix(upper.as_str())
        .and_then(|r| r.strip_prefix('-'))
    {
        if let Some((index, kind)) = rest.split_once('-') {
            return is_hex(index, true) && kind.len() == 1;
        }
    }
    match word.strip_prefix(prefix).and_then(|r| r.strip_prefix('b')) {
        Some("+") => true,
        Some(index) => is_hex(index, false),
        None => false,
    }
}

/// Every line of `iptables -S` and `iptables -t nat -S` that names a chain or bridge of
/// `prefix`: empty when nothing leaked. A listing that fails shows up as a line of its own, so
/// that a leak check cannot pass by accident.
pub async fn leftover_rules(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for args in [&["-w", "-S"][..], &["-w", "-t", "nat", "-S"][..]] {
        match run("iptables", args, None).await {
            Ok(listing) => found.extend(
                listing
                    .lines()
                    .filter(|line| line.split_whitespace().any(|w| names_ours(w, prefix)))
                    .map(String::from),
            ),
            Err(cause) => found.push(format!("cannot list rules: {cause}")),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn spec(egress: bool) -> FirewallSpec {
        FirewallSpec {
            prefix: "ntst".into(),
            net_index: 0x1a,
            bridge: "ntstb1a".into(),
            subnet: Subnet::new(Ipv4Addr::new(10, 251, 26, 0), 24),
            host_ports: vec![5000, 8443],
            egress,
            uplink: "eth0".into(),
        }
    }

    const FILTER_NO_EGRESS: &str = "\
*filter
:NTST-1A-F - [0:0]
:NTST-1A-I - [0:0]
-A NTST-1A-F -i ntstb1a -o ntstb1a -j ACCEPT
-A NTST-1A-F -j DROP
-A NTST-1A-I -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NTST-1A-I -d 10.251.26.1/32 -p udp --dport 53 -j ACCEPT
-A NTST-1A-I -d 10.251.26.1/32 -p tcp --dport 5000 -j ACCEPT
-A NTST-1A-I -d 10.251.26.1/32 -p tcp --dport 8443 -j ACCEPT
-A NTST-1A-I -p tcp -j REJECT --reject-with tcp-reset
-A NTST-1A-I -p udp -j REJECT --reject-with icmp-port-unreachable
-A NTST-1A-I -j DROP
-I FORWARD 1 -i ntstb1a -j NTST-1A-F
-I FORWARD 1 -o ntstb1a -j NTST-1A-F
-I INPUT 1 -i ntstb1a -j NTST-1A-I
COMMIT
";

    #[test]
    fn install_without_egress() {
        assert_eq!(
            render_install(&spec(false), &Existing::default()),
            FILTER_NO_EGRESS
        );
    }

    #[test]
    fn install_with_egress() {
        let text = render_install(&spec(true), &Existing::default());
        assert_eq!(
            text,
            "\
*filter
:NTST-1A-F - [0:0]
:NTST-1A-I - [0:0]
-A NTST-1A-F -i ntstb1a -o ntstb1a -j ACCEPT
-A NTST-1A-F -i ntstb1a -o eth0 -j ACCEPT
-A NTST-1A-F -i eth0 -o ntstb1a -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NTST-1A-F -j DROP
-A NTST-1A-I -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NTST-1A-I -d 10.251.26.1/32 -p udp --dport 53 -j ACCEPT
-A NTST-1A-I -d 10.251.26.1/32 -p tcp --dport 5000 -j ACCEPT
-A NTST-1A-I -d 10.251.26.1/32 -p tcp --dport 8443 -j ACCEPT
-A NTST-1A-I -p tcp -j REJECT --reject-with tcp-reset
-A NTST-1A-I -p udp -j REJECT --reject-with icmp-port-unreachable
-A NTST-1A-I -j DROP
-I FORWARD 1 -i ntstb1a -j NTST-1A-F
-I FORWARD 1 -o ntstb1a -j NTST-1A-F
-I INPUT 1 -i ntstb1a -j NTST-1A-I
COMMIT
*nat
:NTST-1A-N - [0:0]
-A NTST-1A-N -s 10.251.26.0/24 -o eth0 -j MASQUERADE
-I POSTROUTING 1 -s 10.251.26.0/24 -j NTST-1A-N
COMMIT
"
        );
    }

    #[test]
    fn install_without_host_ports_rejects_all() {
        let mut s = spec(false);
        s.host_ports.clear();
        let text = render_install(&s, &Existing::default());
        assert!(
            !text.contains("-p tcp --dport"),
            "no host port is open: {text}"
        );
        assert!(text.contains("-A NTST-1A-I -p tcp -j REJECT --reject-with tcp-reset\n"));
    }

    /// An `iptables-save` listing of a host with docker chains, another network of the same
    /// prefix, and two copies of our jumps (an install that ran twice).
    const SAVE: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:NTST-1A-F - [0:0]
:NTST-1A-I - [0:0]
:NTST-1B-F - [0:0]
-A INPUT -i ntstb1a -j NTST-1A-I
-A INPUT -i ntstb1a -j NTST-1A-I
-A FORWARD -o ntstb1b -j NTST-1B-F
-A FORWARD -o ntstb1a -j NTST-1A-F
-A FORWARD -i ntstb1a -j NTST-1A-F
-A FORWARD -o ntstb1a -j NTST-1A-F
-A FORWARD -i ntstb1a -j NTST-1A-F
-A FORWARD -o docker0 -j DOCKER
-A NTST-1A-F -i ntstb1a -o ntstb1a -j ACCEPT
-A NTST-1A-F -j DROP
-A NTST-1B-F -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:NTST-1A-N - [0:0]
-A POSTROUTING -s 10.251.26.0/24 -j NTST-1A-N
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A NTST-1A-N -s 10.251.26.0/24 -o eth0 -j MASQUERADE
COMMIT
*mangle
:NTST-1A-F - [0:0]
-A PREROUTING -j NTST-1A-F
COMMIT
";

    fn scanned() -> Existing {
        Existing::scan(SAVE, |c| Chains::of(&spec(false)).contains(c))
    }

    #[test]
    fn scan_finds_only_this_network() {
        assert_eq!(
            scanned(),
            Existing {
                filter_chains: vec!["NTST-1A-F".into(), "NTST-1A-I".into()],
                filter_jumps: vec![
                    "-A INPUT -i ntstb1a -j NTST-1A-I".into(),
                    "-A INPUT -i ntstb1a -j NTST-1A-I".into(),
                    "-A FORWARD -o ntstb1a -j NTST-1A-F".into(),
                    "-A FORWARD -i ntstb1a -j NTST-1A-F".into(),
                    "-A FORWARD -o ntstb1a -j NTST-1A-F".into(),
                    "-A FORWARD -i ntstb1a -j NTST-1A-F".into(),
                ],
                nat_chains: vec!["NTST-1A-N".into()],
                nat_jumps: vec!["-A POSTROUTING -s 10.251.26.0/24 -j NTST-1A-N".into()],
            }
        );
        assert!(
            Existing::scan("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", |c| Chains::of(
                &spec(false)
            )
            .contains(c))
            .is_empty()
        );
    }

    #[test]
    fn chains_of_a_prefix_by_network() {
        assert_eq!(chain_index("NTST-1A-F", "ntst"), Some(0x1a));
        assert_eq!(chain_index("NTST-0-N", "ntst"), Some(0));
        for not_ours in [
            "NTST-1a-F",
            "NTST-1A-FF",
            "NTSTX-1A-F",
            "OTHER-1A-F",
            "ntstb1a",
            "NTST-1A",
        ] {
            assert_eq!(chain_index(not_ours, "ntst"), None, "{not_ours}");
        }
        // Every network but the kept one: its chains and jumps, nothing of docker's.
        let unkept = Existing::scan(SAVE, |c| chain_index(c, "ntst").is_some_and(|i| i != 0x1a));
        assert_eq!(
            unkept,
            Existing {
                filter_chains: vec!["NTST-1B-F".into()],
                filter_jumps: vec!["-A FORWARD -o ntstb1b -j NTST-1B-F".into()],
                ..Existing::default()
            }
        );
        assert_eq!(
            render_remove(&unkept).unwrap(),
            "*filter\n-D FORWARD -o ntstb1b -j NTST-1B-F\n-F NTST-1B-F\n-X NTST-1B-F\nCOMMIT\n"
        );
    }

    #[test]
    fn reinstall_replaces_old_jumps_and_drops_stale_nat() {
        let text = render_install(&spec(false), &scanned());
        let expected_filter = FILTER_NO_EGRESS.replacen(
            ":NTST-1A-I - [0:0]\n",
            ":NTST-1A-I - [0:0]\n\
             -D INPUT -i ntstb1a -j NTST-1A-I\n\
             -D INPUT -i ntstb1a -j NTST-1A-I\n\
             -D FORWARD -o ntstb1a -j NTST-1A-F\n\
             -D FORWARD -i ntstb1a -j NTST-1A-F\n\
             -D FORWARD -o ntstb1a -j NTST-1A-F\n\
             -D FORWARD -i ntstb1a -j NTST-1A-F\n",
            1,
        );
        assert_eq!(
            text,
            format!(
                "{expected_filter}*nat\n\
                 -D POSTROUTING -s 10.251.26.0/24 -j NTST-1A-N\n\
                 -F NTST-1A-N\n-X NTST-1A-N\n\
                 COMMIT\n"
            )
        );
    }

    #[test]
    fn reinstall_with_egress_keeps_one_nat_jump() {
        let text = render_install(&spec(true), &scanned());
        assert!(text.ends_with(
            "*nat\n\
             :NTST-1A-N - [0:0]\n\
             -D POSTROUTING -s 10.251.26.0/24 -j NTST-1A-N\n\
             -A NTST-1A-N -s 10.251.26.0/24 -o eth0 -j MASQUERADE\n\
             -I POSTROUTING 1 -s 10.251.26.0/24 -j NTST-1A-N\n\
             COMMIT\n"
        ));
    }

    #[test]
    fn remove_deletes_jumps_before_chains() {
        assert_eq!(render_remove(&Existing::default()), None);
        assert_eq!(
            render_remove(&scanned()).unwrap(),
            "\
*filter
-D INPUT -i ntstb1a -j NTST-1A-I
-D INPUT -i ntstb1a -j NTST-1A-I
-D FORWARD -o ntstb1a -j NTST-1A-F
-D FORWARD -i ntstb1a -j NTST-1A-F
-D FORWARD -o ntstb1a -j NTST-1A-F
-D FORWARD -i ntstb1a -j NTST-1A-F
-F NTST-1A-F
-X NTST-1A-F
-F NTST-1A-I
-X NTST-1A-I
COMMIT
*nat
-D POSTROUTING -s 10.251.26.0/24 -j NTST-1A-N
-F NTST-1A-N
-X NTST-1A-N
COMMIT
"
        );
        // A half-removed network: a chain without jumps, nothing in nat.
        let partial = Existing {
            filter_chains: vec!["NTST-1A-I".into()],
            ..Existing::default()
        };
        assert_eq!(
            render_remove(&partial).unwrap(),
            "*filter\n-F NTST-1A-I\n-X NTST-1A-I\nCOMMIT\n"
        );
    }

    #[test]
    fn leak_check_recognises_prefix_objects_only() {
        for w in [
            "NTST-1A-F",
            "NTST-0-N",
            "ntstb1",
            "ntstbfff",
            "ntstb1a2",
            "ntstb+",
        ] {
            assert!(names_ours(w, "ntst"), "{w}");
        }
        for w in [
            "NTSTX-1-F",
            "NTST-1",
            "NTST-1A-",
            "NTST-g-F",
            "ntstb",
            "ntstbx",
            "ntstxb1",
            "ntst1v2",
            "DOCKER",
            "-j",
        ] {
            assert!(!names_ours(w, "ntst"), "{w}");
        }
        assert!(!names_ours("ntstb1", "nts"));
    }
}
