//! Execution: what a replica does with the finalized chain.
//!
//! Consensus delivers finalized blocks in height order; each becomes a [`Batch`] for a
//! [`StateMachine`], which must be deterministic: the same batches give every replica the same
//! state, byte for byte. The [`manager::StateManager`] drives the machine, checkpoints its
//! state at every summary height (the heights catch-up packages certify) into a
//! [`checkpoints::CheckpointStore`], and installs a state fetched by state sync.
//!
//! # Layout
//! - [`Batch`], [`IngressStatus`], [`StateMachine`]: the interface between consensus and
//!   execution; `thicket-state`'s `SubnetState` implements it;
//! - [`manager`]: execution, checkpoints, state hashes for consensus, installing synced state;
//! - [`checkpoints`]: manifests and chunks on sled, served to peers for state sync.
//!
//! ```text
//!  finalized block ─► Batch ─► StateMachine::execute ─► statuses (ingress history)
//!  summary height  ─► encode ─► Manifest::split ─► CheckpointStore ─► state hash ─► CUP
//!  state sync      ─► manifest (checked against CUP) + chunks (checked against manifest)
//!                  ─► StateManager::install
//! ```

pub mod checkpoints;
pub mod manager;

use serde::{Deserialize, Serialize};
use thicket_types::Height;
use thicket_types::block::Block;
use thicket_types::ingress::RequestId;
use thicket_types::state::Chunk;

/// One finalized block, as execution sees it.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    pub height: Height,
    /// The block's time in nanoseconds since the UNIX epoch: the only clock execution sees.
    pub time_ns: u64,
    /// Ingress messages in block order (canonical encodings of `IngressMessage`).
    pub ingress: Vec<&'a [u8]>,
}

impl<'a> Batch<'a> {
    pub fn of(block: &'a Block) -> Self {
        Batch {
            height: block.height,
            time_ns: block.time_ms.saturating_mul(1_000_000),
            ingress: block
                .data()
                .map(|d| d.ingress.iter().map(Vec::as_slice).collect())
                .unwrap_or_default(),
        }
    }
}

/// What became of an ingress message, as the IC reports request statuses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngressStatus {
    /// Being answered: the call it made to other canisters is still open.
    Processing { height: Height },
    Replied {
        height: Height,
        #[serde(with = "serde_bytes")]
        reply: Vec<u8>,
    },
    Rejected {
        height: Height,
        /// IC reject code (1 system fatal … 5 canister error).
        code: u8,
        message: String,
        /// The IC's finer error code (`IC0503` …), when there is one.
        error_code: Option<String>,
    },
}

impl IngressStatus {
    pub fn height(&self) -> Height {
        match self {
            IngressStatus::Processing { height }
            | IngressStatus::Replied { height, .. }
            | IngressStatus::Rejected { height, .. } => *height,
        }
    }
}

/// The replicated state machine behind consensus.
pub trait StateMachine: Sized + Send + 'static {
    /// The state before the first block.
    fn genesis() -> Self;
    /// Executes one batch; returns the status of each message it executed. Must be
    /// deterministic and must not fail: bad messages are rejected or skipped, never fatal.
    fn execute(&mut self, batch: &Batch<'_>) -> Vec<(RequestId, IngressStatus)>;
    /// The last executed height.
    fn height(&self) -> Height;
    /// The whole state as checkpoint chunks, in order (their concatenation is what
    /// [`Self::decode`] reads). A state may know the hashes of chunks it did not change, and
    /// produce their bytes only if the store lacks them.
    fn checkpoint(&self) -> Vec<Chunk>;
    /// The whole state's canonical encoding: the checkpoint's chunks, concatenated.
    fn encode(&self) -> Vec<u8> {
        self.checkpoint()
            .into_iter()
            .flat_map(|c| (c.bytes)())
            .collect()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String>;
    /// The status of a request, while the state remembers it.
    fn ingress_status(&self, id: &RequestId) -> Option<&IngressStatus>;
}
