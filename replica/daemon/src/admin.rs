//! The admin gRPC API: status for the CLI and the operator, registry changes to submit, and the
//! genesis steps an orchestrator drives (see `proto/thicket/admin.proto`).
//!
//! [`AdminService`] serves a running replica. A replica in a pod that waits for genesis is
//! served by [`crate::pod`], which hands over to an [`AdminService`] once it runs; both derive
//! a genesis from its public inputs with [`derive_genesis`].

use std::collections::BTreeMap;
use std::sync::Arc;

use thicket_consensus::genesis;
use thicket_crypto::dkg::{Complaint, Dealing};
use thicket_proto::admin::admin_server::Admin;
use thicket_proto::admin::{
    AuditRecord, AuditReply, AuditRequest, Genesis, GenesisComplainReply, GenesisComplainRequest,
    GenesisDealReply, GenesisDealRequest, NodeDealings, Phase, StartReply, StartRequest,
    StatusReply, StatusRequest, SubmitRegistryChangeReply, SubmitRegistryChangeRequest,
};
use thicket_types::NodeId;
use thicket_types::artifacts::{CatchUpContent, ConsensusMessage};
use thicket_types::block::DkgTag;
use thicket_types::registry::{Registry, SignedRegistryChange};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::audit::Audit;
use crate::metrics::Metrics;
use crate::transport::Inbound;

/// The admin API of a running replica.
#[derive(Clone)]
pub struct AdminService {
    pub node_id: u64,
    pub audit: Arc<Audit>,
    pub metrics: Arc<Metrics>,
    pub inbox: mpsc::Sender<Inbound>,
}

impl AdminService {
    /// The replica's status, in the phase given.
    pub fn status_reply(&self, phase: Phase) -> Result<StatusReply, Status> {
        let m = &self.metrics;
        let s = m
            .status
            .lock()
            .map_err(|_| Status::internal("status lock poisoned"))?
            .clone();
        let height = |g: i64| u64::try_from(g).unwrap_or(0);
        Ok(StatusReply {
            node_id: self.node_id.to_string(),
            subnet_id: s.subnet_id,
            finalized_height: height(m.finalized_height.get()),
            notarized_height: height(m.notarized_height.get()),
            executed_height: height(m.executed_height.get()),
            root_height: s.root_height,
            subnet_public_key: s.subnet_public_key,
            members: s.members.iter().map(u64::to_string).collect(),
            registry_version: s.registry_version,
            dkg_epoch: height(m.dkg_epoch.get()),
            peers_connected: u32::try_from(m.peers_connected.get()).unwrap_or(0),
            pending_registry_version: s.pending_registry_version,
            pending_members: s.pending_members.iter().map(u64::to_string).collect(),
            ingress_accepted: m.ingress_accepted.get(),
            node_record: s.node_record,
            holds_current_key_shares: s.holds_current_key_shares,
            holds_next_key_shares: s.holds_next_key_shares,
            phase: phase.into(),
            genesis_hash: s.genesis_hash,
            effective_canister_id: thicket_state::ids::first_user_canister().to_text(),
        })
    }

    /// Start on a running replica: the same genesis again is answered as the first time was,
    /// another one is refused.
    pub fn restart(&self, req: &StartRequest) -> Result<StartReply, Status> {
        let root = derive_genesis(req.genesis.as_ref())?;
        let running = self
            .metrics
            .status
            .lock()
            .map_err(|_| Status::internal("status lock poisoned"))?
            .genesis_hash
            .clone();
        let asked = root.block.hash().0.to_vec();
        if asked != running {
            return Err(Status::failed_precondition(format!(
                "this replica already runs from genesis {}, not {}",
                hex::encode(&running),
                hex::encode(&asked)
            )));
        }
        Ok(start_reply(&root))
    }
}

/// What Start answers for a genesis: its subnet public key and block hash.
pub fn start_reply(root: &CatchUpContent) -> StartReply {
    StartReply {
        subnet_public_key: root
            .block
            .summary()
            .map(|s| s.current.high.coefficients().public_key().to_der())
            .unwrap_or_default(),
        genesis_hash: root.block.hash().0.to_vec(),
    }
}

fn running(step: &str) -> Status {
    Status::failed_precondition(format!(
        "{step}: this replica already runs; genesis steps are for replicas waiting for genesis"
    ))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        self.status_reply(Phase::Running).map(Response::new)
    }

    async fn submit_registry_change(
        &self,
        req: Request<SubmitRegistryChangeRequest>,
    ) -> Result<Response<SubmitRegistryChangeReply>, Status> {
        let change: SignedRegistryChange = bincode::deserialize(&req.get_ref().signed_change)
            .map_err(|e| Status::invalid_argument(format!("signed_change does not decode: {e}")))?;
        // Consensus checks the admin signature and the version, like any gossiped change.
        let msg = ConsensusMessage::RegistryChange(Box::new(change));
        self.inbox
            .send(Inbound::Artifacts(vec![(msg.id(), msg)]))
            .await
            .map_err(|_| Status::unavailable("replica shutting down"))?;
        Ok(Response::new(SubmitRegistryChangeReply {}))
    }

    async fn genesis_deal(
        &self,
        _: Request<GenesisDealRequest>,
    ) -> Result<Response<GenesisDealReply>, Status> {
        Err(running("GenesisDeal"))
    }

    async fn genesis_complain(
        &self,
        _: Request<GenesisComplainRequest>,
    ) -> Result<Response<GenesisComplainReply>, Status> {
        Err(running("GenesisComplain"))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartReply>, Status> {
        self.restart(req.get_ref()).map(Response::new)
    }

    async fn audit(&self, req: Request<AuditRequest>) -> Result<Response<AuditReply>, Status> {
        Ok(Response::new(self.audit_reply(req.get_ref())))
    }
}

impl AdminService {
    /// A page of the replica's audit record.
    pub fn audit_reply(&self, req: &AuditRequest) -> AuditReply {
        let limit = match req.limit {
            0 => crate::audit::MAX_PAGE,
            n => n as usize,
        };
        let (records, oldest) = self.audit.since(req.after, limit);
        AuditReply {
            boot: self.audit.boot,
            oldest,
            node_id: self.node_id.to_string(),
            records: records
                .into_iter()
                .map(|r| AuditRecord {
                    seq: r.seq,
                    height: r.height.0,
                    kind: r.kind.name().to_string(),
                    hash: r.hash.0.to_vec(),
                    rank: r.rank,
                })
                .collect(),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    bincode::deserialize(bytes)
        .map_err(|e| Status::invalid_argument(format!("{what} does not decode: {e}")))
}

/// The genesis registry of a request; it must be version 0 with consistent keys.
pub fn decode_registry(bytes: &[u8]) -> Result<Registry, Status> {
    let registry: Registry = decode(bytes, "registry")?;
    if registry.version != 0 {
        return Err(Status::invalid_argument(format!(
            "a genesis registry has version 0, not {}",
            registry.version
        )));
    }
    registry
        .check_keys()
        .map_err(|e| Status::invalid_argument(format!("genesis registry: {e}")))?;
    Ok(registry)
}

/// The members' dealings, by dealer; a dealer named twice is refused.
pub fn decode_dealings(list: &[NodeDealings]) -> Result<BTreeMap<NodeId, [Dealing; 2]>, Status> {
    let mut out = BTreeMap::new();
    for d in list {
        let pair: [Dealing; 2] = decode(&d.dealings, "dealings")?;
        if out.insert(NodeId(d.node_id), pair).is_some() {
            return Err(Status::invalid_argument(format!(
                "dealings of node {} given twice",
                d.node_id
            )));
        }
    }
    Ok(out)
}

/// The genesis block, beacon and keys every replica derives from the same public inputs.
pub fn derive_genesis(g: Option<&Genesis>) -> Result<CatchUpContent, Status> {
    let g = g.ok_or_else(|| Status::invalid_argument("genesis is missing"))?;
    let registry = decode_registry(&g.registry)?;
    let dealings = decode_dealings(&g.dealings)?;
    let mut complaints: Vec<(NodeId, DkgTag, Complaint)> = Vec::new();
    for c in &g.complaints {
        complaints.extend(decode::<Vec<(NodeId, DkgTag, Complaint)>>(
            &c.complaints,
            "complaints",
        )?);
    }
    genesis::root(registry, &dealings, &complaints)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}
