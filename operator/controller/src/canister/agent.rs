//! The operator's calls to a subnet's IC HTTP interface, with the IC's own Rust agent under
//! the operator's identity. The agent trusts only the root key in the Subnet's status: every
//! certificate (call results, read_state) is checked against it.

use std::collections::BTreeSet;

use candid::Principal;
use ic_agent::identity::BasicIdentity;
use ic_agent::{Agent, AgentError};
use ic_utils::call::AsyncCall;
use ic_utils::interfaces::ManagementCanister;
use ic_utils::interfaces::management_canister::builders::{
    CanisterInstallMode, UpgradeFlags, WasmMemoryPersistence,
};

use super::plan::{OnSubnet, SubnetInfo};
use super::source::Module;

/// How long an update call may take (created, installed, stopped): a few DKG intervals.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    #[error("the subnet's public key is not hex")]
    RootKey,
    #[error("{what}: {source}")]
    Agent {
        what: &'static str,
        source: Box<AgentError>,
    },
    #[error("{0} is not a principal")]
    Principal(String),
}

fn err(what: &'static str) -> impl FnOnce(AgentError) -> AgentCallError {
    move |source| AgentCallError::Agent {
        what,
        source: Box::new(source),
    }
}

/// An agent for `subnet` with the operator's identity (an Ed25519 seed).
pub fn connect(subnet: &SubnetInfo, identity: &[u8; 32]) -> Result<Agent, AgentCallError> {
    let root = hex::decode(&subnet.public_key).map_err(|_| AgentCallError::RootKey)?;
    let agent = Agent::builder()
        .with_url(&subnet.endpoint)
        .with_identity(BasicIdentity::from_raw_key(identity))
        .with_max_tcp_error_retries(3)
        .with_ingress_expiry(std::time::Duration::from_secs(240))
        .build()
        .map_err(err("building the agent"))?;
    agent.set_root_key(root);
    Ok(agent)
}

pub fn principal(text: &str) -> Result<Principal, AgentCallError> {
    Principal::from_text(text).map_err(|_| AgentCallError::Principal(text.to_string()))
}

/// The operator's principal under `identity`.
pub fn operator_principal(identity: &[u8; 32]) -> String {
    use ic_agent::Identity;
    BasicIdentity::from_raw_key(identity)
        .sender()
        .map(|p| p.to_text())
        .unwrap_or_default()
}

/// What the certified state says about `canister`.
pub async fn observe(agent: &Agent, canister: Principal) -> Result<OnSubnet, AgentCallError> {
    let controllers = match agent.read_state_canister_controllers(canister).await {
        Ok(c) => c,
        Err(AgentError::LookupPathAbsent(_)) => {
            return Ok(OnSubnet {
                exists: false,
                module_hash: None,
                controllers: BTreeSet::new(),
            });
        }
        Err(e) => return Err(err("reading the canister's controllers")(e)),
    };
    let module_hash = match agent.read_state_canister_module_hash(canister).await {
        Ok(h) => Some(hex::encode(h)),
        Err(AgentError::LookupPathAbsent(_)) => None,
        Err(e) => return Err(err("reading the canister's module hash")(e)),
    };
    Ok(OnSubnet {
        exists: true,
        module_hash,
        controllers: controllers.iter().map(Principal::to_text).collect(),
    })
}

/// Creates a canister controlled by `controllers`.
pub async fn create(
    agent: &Agent,
    effective: &str,
    controllers: &BTreeSet<String>,
) -> Result<Principal, AgentCallError> {
    let mgmt = ManagementCanister::create(agent);
    let mut builder = mgmt
        .create_canister()
        .as_provisional_create_with_amount(None)
        .with_effective_canister_id(principal(effective)?);
    for c in controllers {
        builder = builder.with_controller(principal(c)?);
    }
    let (id,) = tokio::time::timeout(CALL_TIMEOUT, builder.call_and_wait())
        .await
        .map_err(|_| err("creating the canister")(AgentError::TimeoutWaitingForResponse()))?
        .map_err(err("creating the canister"))?;
    Ok(id)
}

/// Installs `module` into an empty canister, or upgrades it (keeping the Wasm memory of a
/// module with enhanced orthogonal persistence).
pub async fn install(
    agent: &Agent,
    canister: Principal,
    module: &Module,
    arg: Vec<u8>,
    upgrade: bool,
) -> Result<(), AgentCallError> {
    let mode = if upgrade {
        let keep = module
            .keeps_main_memory()
            .then_some(WasmMemoryPersistence::Keep);
        CanisterInstallMode::Upgrade(Some(UpgradeFlags {
            skip_pre_upgrade: None,
            wasm_memory_persistence: keep,
        }))
    } else {
        CanisterInstallMode::Install
    };
    let mgmt = ManagementCanister::create(agent);
    let call = mgmt
        .install(&canister, &module.wasm)
        .with_mode(mode)
        .with_raw_arg(arg)
        .call_and_wait();
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| err("installing the module")(AgentError::TimeoutWaitingForResponse()))?
        .map_err(err("installing the module"))
}

pub async fn set_controllers(
    agent: &Agent,
    canister: Principal,
    controllers: &BTreeSet<String>,
) -> Result<(), AgentCallError> {
    let mgmt = ManagementCanister::create(agent);
    let mut builder = mgmt.update_settings(&canister);
    for c in controllers {
        builder = builder.with_controller(principal(c)?);
    }
    builder
        .build()
        .map_err(err("updating the controllers"))?
        .call_and_wait()
        .await
        .map_err(err("updating the controllers"))
}

/// Stops and deletes `canister`; one already gone is fine.
pub async fn stop_and_delete(agent: &Agent, canister: Principal) -> Result<(), AgentCallError> {
    if !observe(agent, canister).await?.exists {
        return Ok(());
    }
    let mgmt = ManagementCanister::create(agent);
    tokio::time::timeout(CALL_TIMEOUT, mgmt.stop_canister(&canister).call_and_wait())
        .await
        .map_err(|_| err("stopping the canister")(AgentError::TimeoutWaitingForResponse()))?
        .map_err(err("stopping the canister"))?;
    mgmt.delete_canister(&canister)
        .call_and_wait()
        .await
        .map_err(err("deleting the canister"))
}
