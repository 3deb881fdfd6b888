//! The network of a run: one network namespace per replica on a bridge, and the faults the
//! kernel injects there with iptables.
//!
//! ```text
//!  host (root namespace): bridge thkf-br 10.78.0.254, relay sources 10.78.0.101..
//!    ├─ veth ─ namespace thkf-r0: eth0 10.78.0.1  (replica 0: p2p :7000, HTTP :8080)
//!    ├─ veth ─ namespace thkf-r1: eth0 10.78.0.2
//!    └─ …
//! ```
//!
//! Replica i's connections to replica j's transport (10.78.0.j+1:7000) are redirected (DNAT
//! in i's namespace) to the relay's port for the link i→j on the host, which connects to j from
//! 10.78.0.(101+i) (see [`crate::relay`]). So in i's namespace, traffic to j is traffic to
//! port [`relay_port`]`(i, j)`, and traffic from j arrives from [`relay_source`]`(j)`: a
//! partition between two replicas is two iptables rules, whichever side opened the
//! connection. Faults go in a chain of their own, `THKF`, which healing flushes; clients reach
//! the HTTP ports directly, and faults leave them alone.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};

const BRIDGE: &str = "thkf-br";
const CHAIN: &str = "THKF";
pub const P2P_PORT: u16 = 7000;
pub const HTTP_PORT: u16 = 8080;
/// The relay's ports: [`relay_port`] is inside this range.
const RELAY_PORTS: (u16, u16) = (21000, 21999);
/// Every port of replica-to-replica traffic, for iptables' multiport match.
const P2P_PORTS: &str = "7000,21000:21999";

pub fn host() -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, 254)
}

pub fn replica_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, 1 + i as u8)
}

/// The address the relay connects to the others from, for traffic replica `i` sent.
pub fn relay_source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, 101 + i as u8)
}

/// The relay's port for replica `from`'s connections to replica `to`.
pub fn relay_port(from: usize, to: usize) -> u16 {
    RELAY_PORTS.0 + 16 * from as u16 + to as u16
}

pub fn namespace(i: usize) -> String {
    format!("thkf-r{i}")
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// iptables in replica i's namespace.
fn iptables(i: usize, rule: &[&str]) -> anyhow::Result<()> {
    let ns = namespace(i);
    let mut args = vec!["ip", "netns", "exec", &ns, "iptables", "-w"];
    args.extend_from_slice(rule);
    run(&args)
}

/// The namespaces and the bridge of a run; removed when dropped.
pub struct Net {
    n: usize,
}

impl Net {
    pub fn create(n: usize) -> anyhow::Result<Net> {
        if n > 15 {
            bail!("at most 15 replicas (the relay's ports are 16 per replica)");
        }
        remove_leftovers();
        // Removed by drop if a step below fails.
        let net = Net { n };
        run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", host()),
            "dev",
            BRIDGE,
        ])?;
        for i in 0..n {
            let src = format!("{}/24", relay_source(i));
            run(&["ip", "addr", "add", &src, "dev", BRIDGE])?;
        }
        run(&["ip", "link", "set", BRIDGE, "up"])?;
        // Bridged traffic passes the host's iptables when br_netfilter is on, and a cluster
        // may have left FORWARD dropping.
        let bridged = ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"];
        run(&[&["iptables", "-w", "-I", "FORWARD"][..], &bridged[..]].concat())?;
        for i in 0..n {
            let ns = namespace(i);
            let veth = format!("thkf-v{i}");
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            run(&["ip", "link", "set", &veth, "master", BRIDGE, "up"])?;
            let addr = format!("{}/24", replica_ip(i));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            for j in (0..n).filter(|j| *j != i) {
                let to = format!("{}:{}", host(), relay_port(i, j));
                iptables(
                    i,
                    &[
                        "-t",
                        "nat",
                        "-A",
                        "OUTPUT",
                        "-p",
                        "tcp",
                        "-d",
                        &replica_ip(j).to_string(),
                        "--dport",
                        &P2P_PORT.to_string(),
                        "-j",
                        "DNAT",
                        "--to-destination",
                        &to,
                    ],
                )?;
            }
            iptables(i, &["-N", CHAIN])?;
            iptables(i, &["-A", "INPUT", "-j", CHAIN])?;
            iptables(i, &["-A", "OUTPUT", "-j", CHAIN])?;
        }
        Ok(net)
    }

    /// Cuts replica `i` off from every other replica (both ways); its clients still reach it.
    pub fn isolate(&self, i: usize) -> anyhow::Result<()> {
        let rule = ["-A", CHAIN, "-p", "tcp", "-m", "multiport", "--ports"];
        iptables(i, &[&rule[..], &[P2P_PORTS, "-j", "DROP"]].concat())
    }

    /// Drops every packet replica `from` sends to replica `to` (whichever opened the
    /// connection); `to`'s packets still reach `from`.
    pub fn cut(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let port = relay_port(from, to).to_string();
        let host = host().to_string();
        iptables(
            from,
            &[
                "-A", CHAIN, "-p", "tcp", "-d", &host, "--dport", &port, "-j", "DROP",
            ],
        )?;
        let src = relay_source(to).to_string();
        iptables(from, &["-A", CHAIN, "-p", "tcp", "-d", &src, "-j", "DROP"])
    }

    /// Drops each replica-to-replica packet of replica `i` (in and out) with probability `p`.
    pub fn loss(&self, i: usize, p: f64) -> anyhow::Result<()> {
        let p = format!("{p:.3}");
        let rule = ["-A", CHAIN, "-p", "tcp", "-m", "multiport", "--ports"];
        iptables(
            i,
            &[
                &rule[..],
                &[
                    P2P_PORTS,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            ]
            .concat(),
        )
    }

    /// Removes every network fault.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 0..self.n {
            iptables(i, &["-F", CHAIN])?;
        }
        Ok(())
    }
}

/// What a run killed mid-way left behind: its namespaces, bridge and FORWARD rule.
fn remove_leftovers() {
    let quiet = |args: &[&str]| {
        let _ = Command::new(args[0]).args(&args[1..]).output();
    };
    for i in 0..16 {
        quiet(&["ip", "netns", "del", &namespace(i)]);
    }
    quiet(&["ip", "link", "del", BRIDGE]);
    let rule = ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"];
    while Command::new("iptables")
        .args([&["-w", "-D", "FORWARD"][..], &rule[..]].concat())
        .output()
        .is_ok_and(|o| o.status.success())
    {}
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_leftovers();
    }
}
