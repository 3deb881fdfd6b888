//! What enters a replica: artifacts from peers and ingress from clients (within the ingress
//! pool's bounds, which only an overloaded subnet reaches); and ingress that expired leaves.

use thicket_consensus::StateReader;
use thicket_consensus::membership::epoch_for_round;
use thicket_consensus::pool::{Mutation, Pool};
use thicket_types::CryptoHash;
use thicket_types::artifacts::ConsensusMessage;
use thicket_types::ingress::{PERMITTED_DRIFT_NS, SignedIngress};

use crate::conduct::Conduct;
use crate::{Core, Ready, To};

/// Ingress messages waiting to be ordered beyond which new ones are refused (HTTP 503),
/// whatever the subnet's block size.
pub const MAX_WAITING_INGRESS: usize = 100_000;

/// Full blocks' worth of ingress (at the subnet's `max_ingress_per_block`) that may wait to
/// be ordered; beyond it new ingress is refused (HTTP 503, the agent may retry). An
/// overloaded subnet then answers what it accepted within about this many blocks, instead of
/// queueing without bound (with 1,000 per block at 2.5 blocks/s, about 8 s).
pub const WAITING_BLOCKS: usize = 20;

/// The same bound in bytes (messages may be up to 2 MiB each).
pub const MAX_WAITING_INGRESS_BYTES: usize = 256 * 1024 * 1024;

/// Why an ingress message was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct PoolFull {
    pub waiting: usize,
    pub bytes: usize,
}

impl std::fmt::Display for PoolFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the ingress pool is full ({} messages, {} bytes waiting); retry later",
            self.waiting, self.bytes
        )
    }
}

impl std::error::Error for PoolFull {}

fn ingress_full(pool: &Pool) -> bool {
    let per_block = pool
        .root_summary()
        .current
        .registry
        .params
        .max_ingress_per_block;
    let most = per_block
        .saturating_mul(WAITING_BLOCKS)
        .clamp(1, MAX_WAITING_INGRESS);
    pool.waiting_len() >= most || pool.waiting_ingress_bytes() >= MAX_WAITING_INGRESS_BYTES
}

/// Waiting ingress messages whose expiry (plus the permitted drift) passed at `now_ms`: they
/// can never execute. Found through the pool's index by expiry, not by decoding every waiting
/// message at each retransmission (up to 20,000 of them under overload).
pub fn expired_ingress(pool: &Pool, now_ms: u64) -> Vec<Mutation> {
    let now_ns = now_ms.saturating_mul(1_000_000);
    pool.waiting_expired_before(now_ns.saturating_sub(PERMITTED_DRIFT_NS))
        .map(|id| Mutation::RemoveOrdered(*id))
        .collect()
}

impl<C: Conduct> Core<C> {
    /// An ingress message a client submitted here at `now_ms` (already checked by the HTTP
    /// interface): into the pool's waiting set as it is (not checked again), and to every peer
    /// with the next step (any block maker may order it).
    pub fn admit_ingress(&mut self, msg: SignedIngress, now_ms: u64) -> Result<(), PoolFull> {
        if ingress_full(&self.pool) {
            return Err(PoolFull {
                waiting: self.pool.waiting_len(),
                bytes: self.pool.waiting_ingress_bytes(),
            });
        }
        let m = ConsensusMessage::Ingress(msg.to_bytes());
        if self.pool.insert_checked(m.clone(), now_ms) {
            self.outbox.push((To::All, m));
        }
        Ok(())
    }

    /// Artifacts from peers: certification goes to the certifier (the pool never holds it);
    /// the rest waits in the pool's unvalidated section for the validator.
    pub(crate) fn receive(
        &mut self,
        list: Vec<(CryptoHash, ConsensusMessage)>,
        state: &dyn StateReader,
        ready: &mut Ready,
    ) {
        for (id, m) in list {
            match m {
                ConsensusMessage::CertificationShare(share) => {
                    // Shares of heights whose epoch is not known here yet are dropped; peers
                    // send them again.
                    if let Some(epoch) = epoch_for_round(&self.pool, share.content.height) {
                        self.certifier
                            .add_share(share, state.executed_height(), epoch);
                    }
                }
                ConsensusMessage::Certification(c) => {
                    if let Some(epoch) = epoch_for_round(&self.pool, c.content.height) {
                        if self.certifier.accept(&c, epoch) {
                            ready.certified.push(*c);
                        }
                    }
                }
                m => {
                    // Ingress beyond the pool's bound is refused; consensus artifacts are not
                    // capped here: a cap that refused every arrival once full would let one
                    // peer's flood of shares for made-up blocks (kept as "transient" until
                    // finalization passes them) lock a replica out of the artifacts it needs
                    // to finalize. Per-peer rate limits bound the flood at the transport.
                    if matches!(m, ConsensusMessage::Ingress(_)) && ingress_full(&self.pool) {
                        ready.dropped += 1;
                        continue;
                    }
                    self.pool.insert_unvalidated_with_id(id, m);
                }
            }
        }
    }
}
