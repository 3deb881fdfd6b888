//! `thicket canister deploy | call`: deploys a canister to the local subnet and calls it, with
//! the Rust IC agent (certificates and query signatures checked against the subnet's root key).

use std::path::{Path, PathBuf};

use anyhow::Context;
use candid::{Decode, Encode, IDLArgs, Principal};
use ic_agent::Agent;
use thicket_state::management::{
    CanisterIdRecord, InstallCodeArgs, InstallMode, ProvisionalCreateCanisterArgs, UpgradeOptions,
    WasmMemoryPersistence,
};

use crate::up::SubnetJson;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Compiles FILE (Motoko `.mo`, with the `motoko` npm package) or takes it as Wasm, creates
    /// a canister and installs it; with --canister, upgrades that canister instead (its memory
    /// is kept). Prints the canister id.
    Deploy {
        file: PathBuf,
        #[arg(long)]
        canister: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Calls METHOD of CANISTER (an update call, or a query with --query) and prints the reply
    /// as Candid text.
    Call {
        canister: String,
        method: String,
        #[arg(long)]
        query: bool,
        /// The arguments as Candid text, e.g. '("hello", 42)' (default: no arguments).
        #[arg(long, conflicts_with = "arg_hex")]
        arg: Option<String>,
        /// The arguments Candid-encoded, in hex.
        #[arg(long)]
        arg_hex: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
pub struct Target {
    /// The local subnet's data directory (its subnet.json names the replicas).
    #[arg(long, default_value = ".thicket")]
    data_dir: PathBuf,
    /// A replica's HTTP URL (default: the first replica of the local subnet).
    #[arg(long)]
    url: Option<String>,
}

impl Target {
    fn url(&self) -> anyhow::Result<String> {
        if let Some(u) = &self.url {
            return Ok(u.clone());
        }
        let subnet = SubnetJson::read(&self.data_dir)?;
        subnet
            .replicas
            .iter()
            .find(|r| !r.removed)
            .map(|r| r.http_url.clone())
            .context("the local subnet has no replica")
    }
}

/// An agent for the replica at `url`, trusting the root key it serves (a local subnet).
pub async fn agent(url: &str) -> anyhow::Result<Agent> {
    let agent = Agent::builder()
        .with_url(url)
        .build()
        .context("building the agent")?;
    agent
        .fetch_root_key()
        .await
        .with_context(|| format!("fetching the root key from {url} (is the subnet up?)"))?;
    Ok(agent)
}

fn wasm_of(file: &Path) -> anyhow::Result<Vec<u8>> {
    if file.extension().is_some_and(|e| e == "mo") {
        thicket_canister::motoko::compile(file).map_err(anyhow::Error::msg)
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))
    }
}

/// Creates a canister and installs `wasm` in it, or upgrades `canister` to it (keeping the
/// Wasm memory of a module with enhanced orthogonal persistence). Returns the canister id.
pub async fn deploy(
    agent: &Agent,
    wasm: Vec<u8>,
    canister: Option<Principal>,
) -> anyhow::Result<Principal> {
    let mgmt = Principal::management_canister();
    let (id, mode) = match canister {
        Some(id) => {
            // Motoko's enhanced orthogonal persistence keeps the Wasm memory, and must be
            // told to.
            let eop = thicket_canister::ModuleInfo::parse(&wasm)
                .map(|i| i.keeps_main_memory())
                .unwrap_or(false);
            let keep = UpgradeOptions {
                skip_pre_upgrade: None,
                wasm_memory_persistence: eop.then_some(WasmMemoryPersistence::Keep),
            };
            (id, InstallMode::Upgrade(Some(keep)))
        }
        None => {
            let ecid = thicket_state::ids::first_user_canister();
            let reply = agent
                .update(&mgmt, "provisional_create_canister_with_cycles")
                .with_effective_canister_id(ecid)
                .with_arg(Encode!(&ProvisionalCreateCanisterArgs::default())?)
                .call_and_wait()
                .await
                .context("creating the canister")?;
            (
                Decode!(&reply, CanisterIdRecord)?.canister_id,
                InstallMode::Install,
            )
        }
    };
    let args = InstallCodeArgs {
        mode,
        canister_id: id,
        wasm_module: serde_bytes::ByteBuf::from(wasm),
        arg: serde_bytes::ByteBuf::from(Encode!()?),
        sender_canister_version: None,
    };
    agent
        .update(&mgmt, "install_code")
        .with_effective_canister_id(id)
        .with_arg(Encode!(&args)?)
        .call_and_wait()
        .await
        .context("installing the code")?;
    Ok(id)
}

pub fn main(cmd: Cmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(run(cmd))
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Deploy {
            file,
            canister,
            target,
        } => {
            let wasm = wasm_of(&file)?;
            let agent = agent(&target.url()?).await?;
            let canister = canister
                .map(|text| {
                    Principal::from_text(&text)
                        .with_context(|| format!("{text:?} is not a canister id"))
                })
                .transpose()?;
            println!("{}", deploy(&agent, wasm, canister).await?);
            Ok(())
        }
        Cmd::Call {
            canister,
            method,
            query,
            arg,
            arg_hex,
            target,
        } => {
            let id = Principal::from_text(&canister)
                .with_context(|| format!("{canister:?} is not a canister id"))?;
            let arg = match (arg, arg_hex) {
                (Some(text), _) => candid_parser::parse_idl_args(&text)
                    .with_context(|| format!("--arg {text:?} is not Candid text"))?
                    .to_bytes()
                    .context("encoding --arg")?,
                (None, Some(h)) => hex::decode(h.trim()).context("--arg-hex is not hexadecimal")?,
                (None, None) => Encode!()?,
            };
            let agent = agent(&target.url()?).await?;
            let reply = if query {
                agent.query(&id, &method).with_arg(arg).call().await
            } else {
                agent
                    .update(&id, &method)
                    .with_arg(arg)
                    .call_and_wait()
                    .await
            }
            .with_context(|| format!("calling {method} on {id}"))?;
            // Bounded: a reply of a few bytes can declare millions of empty values.
            let config = thicket_replica::http::gateway::reply_config();
            match IDLArgs::from_bytes_with_config(&reply, &config) {
                Ok(args) => println!("{args}"),
                Err(_) => println!("{}", hex::encode(&reply)),
            }
            Ok(())
        }
    }
}
