//! The operator's client of the replicas' admin gRPC API (`proto/thicket/admin.proto`): the
//! only way it talks to replicas. Every call has a deadline, so one stuck replica cannot stall
//! a reconcile.

use std::time::Duration;

use thicket_proto::admin::admin_client::AdminClient;
use thicket_proto::admin::{
    Genesis, GenesisComplainRequest, GenesisDealRequest, NodeDealings, Peer, StartReply,
    StartRequest, StatusReply, StatusRequest, SubmitRegistryChangeRequest,
};
use tonic::transport::{Channel, Endpoint};

/// Connecting and answering Status: a replica on the pod network answers in milliseconds.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Dealing, checking dealings and deriving the genesis are DKG work: seconds for large
/// subnets on small machines.
const GENESIS_TIMEOUT: Duration = Duration::from_secs(60);
/// Admin messages carry every genesis dealing (about 2n² group elements).
const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("{url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("{url}: {status}", status = .status.message())]
    Call { url: String, status: tonic::Status },
}

async fn client(url: &str, timeout: Duration) -> Result<AdminClient<Channel>, ReplicaError> {
    let connect = |source| ReplicaError::Connect {
        url: url.to_string(),
        source,
    };
    let channel = Endpoint::from_shared(url.to_string())
        .map_err(connect)?
        .connect_timeout(STATUS_TIMEOUT)
        .timeout(timeout)
        .connect()
        .await
        .map_err(connect)?;
    Ok(AdminClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn call(url: &str) -> impl FnOnce(tonic::Status) -> ReplicaError + '_ {
    move |status| ReplicaError::Call {
        url: url.to_string(),
        status,
    }
}

pub async fn status(url: &str) -> Result<StatusReply, ReplicaError> {
    let mut c = client(url, STATUS_TIMEOUT).await?;
    Ok(c.status(StatusRequest {})
        .await
        .map_err(call(url))?
        .into_inner())
}

/// A genesis member's dealings for `registry`.
pub async fn deal(url: &str, registry: &[u8]) -> Result<Vec<u8>, ReplicaError> {
    let mut c = client(url, GENESIS_TIMEOUT).await?;
    let req = GenesisDealRequest {
        registry: registry.to_vec(),
    };
    Ok(c.genesis_deal(req)
        .await
        .map_err(call(url))?
        .into_inner()
        .dealings)
}

/// A genesis member's complaints about the dealings addressed to it.
pub async fn complain(
    url: &str,
    registry: &[u8],
    dealings: &[NodeDealings],
) -> Result<Vec<u8>, ReplicaError> {
    let mut c = client(url, GENESIS_TIMEOUT).await?;
    let req = GenesisComplainRequest {
        registry: registry.to_vec(),
        dealings: dealings.to_vec(),
    };
    Ok(c.genesis_complain(req)
        .await
        .map_err(call(url))?
        .into_inner()
        .complaints)
}

/// Starts a replica from `genesis` with `peers` to reach first.
pub async fn start(
    url: &str,
    genesis: &Genesis,
    peers: Vec<Peer>,
) -> Result<StartReply, ReplicaError> {
    let mut c = client(url, GENESIS_TIMEOUT).await?;
    let req = StartRequest {
        genesis: Some(genesis.clone()),
        peers,
    };
    Ok(c.start(req).await.map_err(call(url))?.into_inner())
}

/// Hands a replica an administrator-signed registry change to order.
pub async fn submit(url: &str, signed_change: Vec<u8>) -> Result<(), ReplicaError> {
    let mut c = client(url, STATUS_TIMEOUT).await?;
    c.submit_registry_change(SubmitRegistryChangeRequest { signed_change })
        .await
        .map_err(call(url))?;
    Ok(())
}
