//! The admin gRPC API: status for the CLI and the operator, and registry changes to submit.

use std::sync::Arc;

use thicket_proto::admin::admin_server::Admin;
use thicket_proto::admin::{
    StatusReply, StatusRequest, SubmitRegistryChangeReply, SubmitRegistryChangeRequest,
};
use thicket_types::artifacts::ConsensusMessage;
use thicket_types::registry::SignedRegistryChange;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::transport::Inbound;

pub struct AdminService {
    pub node_id: u64,
    pub metrics: Arc<Metrics>,
    pub inbox: mpsc::Sender<Inbound>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let m = &self.metrics;
        let s = m
            .status
            .lock()
            .map_err(|_| Status::internal("status lock poisoned"))?
            .clone();
        let height = |g: i64| u64::try_from(g).unwrap_or(0);
        Ok(Response::new(StatusReply {
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
        }))
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
}
