//! `thicket status` and `thicket replica add|remove`: progress of a running local subnet, and
//! membership changes through consensus.
//!
//! `add` creates the new node's keys in its own data directory, submits an administrator-signed
//! `AddNode` registry change to the members, starts the replica (it catches up from the newest
//! catch-up package and syncs the state from its peers), and waits until the node is a member
//! of the epoch in force. `remove` submits `RemoveNode` and waits until the epoch without the
//! node is in force and the replica stopped (it stops itself once removed).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_proto::admin::admin_client::AdminClient;
use thicket_proto::admin::{StatusReply, StatusRequest, SubmitRegistryChangeRequest};
use thicket_types::registry::{NodeRecord, RegistryChange, SignedRegistryChange};
use thicket_types::{CryptoHash, canonical_bytes};

use crate::replica::{RECORD, read_bincode};
use crate::up::{SubnetJson, grpc_port, replica_dir, replica_json, running, signal, spawn_replica};

#[derive(Subcommand)]
pub enum Cmd {
    /// Adds a new replica to the running local subnet.
    Add {
        #[arg(long, default_value = ".thicket")]
        data_dir: std::path::PathBuf,
        /// Give up waiting for the node to become a member after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Removes a replica from the running local subnet.
    Remove {
        #[arg(long, default_value = ".thicket")]
        data_dir: std::path::PathBuf,
        #[arg(long)]
        node_id: u64,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

pub fn main(cmd: Cmd, otlp: Option<&str>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    match cmd {
        Cmd::Add { data_dir, timeout } => {
            rt.block_on(add(&data_dir, Duration::from_secs(timeout), otlp))
        }
        Cmd::Remove {
            data_dir,
            node_id,
            timeout,
        } => rt.block_on(remove(&data_dir, node_id, Duration::from_secs(timeout))),
    }
}

async fn status(url: &str) -> anyhow::Result<StatusReply> {
    let mut c = AdminClient::connect(url.to_string()).await?;
    Ok(c.status(StatusRequest {}).await?.into_inner())
}

/// The status of the first member that answers.
async fn any_status(info: &SubnetJson, except: Option<u64>) -> anyhow::Result<StatusReply> {
    for r in info.active().filter(|r| Some(r.node_id) != except) {
        if let Ok(s) = status(&r.http_url).await {
            return Ok(s);
        }
    }
    bail!("no replica of the subnet answers; is `thicket up` running?")
}

/// Signs `change` against the registry version the subnet expects next and submits it to
/// every member that answers (each may order it in its next block).
async fn submit(dir: &Path, info: &SubnetJson, change: RegistryChange) -> anyhow::Result<()> {
    let key_path = dir.join("admin.key");
    let key: [u8; 32] = thicket_replica::pod::read_private(&key_path)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", key_path.display()))?;
    let admin = NodeSigningKey::from_bytes(&key);
    let s = any_status(info, None).await?;
    let subnet_id: [u8; 32] = hex::decode(&s.subnet_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("the replica reports a malformed subnet id")?;
    let signed = SignedRegistryChange::signed(
        CryptoHash(subnet_id),
        s.pending_registry_version,
        change,
        &admin,
    );
    let bytes = canonical_bytes(&signed);
    let mut accepted = 0;
    for r in info.active() {
        if let Ok(mut c) = AdminClient::connect(r.http_url.clone()).await {
            if c.submit_registry_change(SubmitRegistryChangeRequest {
                signed_change: bytes.clone(),
            })
            .await
            .is_ok()
            {
                accepted += 1;
            }
        }
    }
    if accepted == 0 {
        bail!("no replica accepted the registry change");
    }
    Ok(())
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done().await {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

async fn add(dir: &Path, timeout: Duration, otlp: Option<&str>) -> anyhow::Result<()> {
    let mut info = SubnetJson::read(dir)?;
    if info.base_port == 0 {
        bail!("subnet.json has no base_port; restart the subnet with this version of `thicket up`");
    }
    let id = info
        .replicas
        .iter()
        .map(|r| r.node_id)
        .max()
        .map_or(0, |m| m + 1);
    let url = format!("http://127.0.0.1:{}", grpc_port(info.base_port, id)?);
    let exe = std::env::current_exe().context("locating the thicket binary")?;
    let d = replica_dir(dir, id);
    let out = std::process::Command::new(&exe)
        .args(["replica", "keygen", "--data-dir"])
        .arg(&d)
        .args(["--node-id", &id.to_string(), "--p2p-url", &url])
        .output()
        .context("running `thicket replica keygen`")?;
    if !out.status.success() {
        bail!(
            "keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let record: NodeRecord = read_bincode(&d.join(RECORD), "node record")?;

    // Start and record the replica first (it waits, refused by the members, until its change
    // is ordered), so that `up` knows it before it can become a member.
    let members: Vec<u64> = info.active().map(|r| r.node_id).collect();
    let child = spawn_replica(
        &exe,
        dir,
        info.base_port,
        info.http_host,
        id,
        &members,
        otlp,
    )?;
    let entry = replica_json(dir, info.base_port, info.http_host, id, child.id())?;
    info.replicas.push(entry.clone());
    info.write(dir)?;
    eprintln!(
        "replica {id} started (pid {}, gRPC {}, HTTP {})",
        entry.pid, entry.grpc_url, entry.http_url
    );
    submit(dir, &info, RegistryChange::AddNode(Box::new(record))).await?;
    eprintln!("registry change submitted: add node {id}; waiting until it is a member");
    let admin = entry.http_url.clone();
    wait_for("the node to join the epoch in force", timeout, async || {
        status(&admin)
            .await
            .is_ok_and(|s| s.members.contains(&id.to_string()) && s.executed_height > 0)
    })
    .await?;
    let s = status(&admin).await?;
    println!(
        "node {id} joined: members {} (registry version {}), finalized height {}",
        s.members.join(","),
        s.registry_version,
        s.finalized_height
    );
    Ok(())
}

async fn remove(dir: &Path, id: u64, timeout: Duration) -> anyhow::Result<()> {
    let mut info = SubnetJson::read(dir)?;
    let Some(entry) = info.active().find(|r| r.node_id == id).cloned() else {
        bail!(
            "node {id} is not a member of the subnet in {}",
            dir.display()
        );
    };
    if info.active().count() <= 1 {
        bail!("node {id} is the last member; stop the subnet instead");
    }
    submit(
        dir,
        &info,
        RegistryChange::RemoveNode(thicket_types::NodeId(id)),
    )
    .await?;
    eprintln!("registry change submitted: remove node {id}; waiting for the epoch without it");
    let info_ref = &info;
    wait_for("the epoch without the node", timeout, async || {
        any_status(info_ref, Some(id))
            .await
            .is_ok_and(|s| !s.members.contains(&id.to_string()))
    })
    .await?;
    // The replica stops by itself once removed; make sure.
    let stopped = wait_for(
        "the removed replica to stop",
        Duration::from_secs(30),
        async || !running(entry.pid),
    )
    .await;
    if stopped.is_err() {
        signal(entry.pid, "TERM");
    }
    for r in info.replicas.iter_mut().filter(|r| r.node_id == id) {
        r.removed = true;
    }
    info.write(dir)?;
    let s = any_status(&info, Some(id)).await?;
    println!(
        "node {id} removed: members {} (registry version {})",
        s.members.join(","),
        s.registry_version
    );
    Ok(())
}

pub fn subnet_status(dir: &Path) -> anyhow::Result<()> {
    let info = SubnetJson::read(dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(async {
        println!("subnet {}", info.subnet_id);
        println!(
            "{:>5} {:>10} {:>10} {:>9} {:>10} {:>6} {:>5} {:>9}  members",
            "node",
            "finalized",
            "notarized",
            "blocks/s",
            "dkg epoch",
            "shares",
            "peers",
            "registry"
        );
        for r in info.active() {
            match sample(&r.http_url).await {
                Ok((a, b, elapsed)) => println!(
                    "{:>5} {:>10} {:>10} {:>9.2} {:>10} {:>6} {:>5} {:>9}  {}",
                    r.node_id,
                    b.finalized_height,
                    b.notarized_height,
                    (b.finalized_height.saturating_sub(a.finalized_height)) as f64 / elapsed,
                    b.dkg_epoch,
                    if b.holds_current_key_shares {
                        "yes"
                    } else {
                        "no"
                    },
                    b.peers_connected,
                    b.registry_version,
                    b.members.join(",")
                ),
                Err(e) => println!("{:>5} unreachable: {e}", r.node_id),
            }
        }
        Ok(())
    })
}

/// Two status readings a second apart (for the block rate).
async fn sample(
    url: &str,
) -> anyhow::Result<(
    thicket_proto::admin::StatusReply,
    thicket_proto::admin::StatusReply,
    f64,
)> {
    let mut client = AdminClient::connect(url.to_string()).await?;
    let start = Instant::now();
    let a = client.status(StatusRequest {}).await?.into_inner();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = client.status(StatusRequest {}).await?.into_inner();
    Ok((a, b, start.elapsed().as_secs_f64()))
}
