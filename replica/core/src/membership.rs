//! Membership as this replica sees it, each time the finalized height moves: the peers the
//! registry names (the members in force, those announced for the next epoch, and those added
//! by changes ordered in the open interval, so a joining node is reached as soon as its change
//! is finalized), and whether this node was removed.

use std::collections::BTreeMap;

use thicket_consensus::membership::{epoch_for_round, finalized_summary, summary_height_for_round};
use thicket_consensus::payload::IntervalChain;
use thicket_consensus::pool::Pool;
use thicket_types::registry::{NodeRecord, Registry};
use thicket_types::{Height, NodeId};

use crate::Ready;

#[derive(Default)]
pub struct Tracker {
    /// The finalized height last looked at.
    at: Option<Height>,
    /// Whether this node was ever in the registry (in force or pending).
    was_member: bool,
    removed: bool,
}

impl Tracker {
    /// True once a registry change removed this node and the epoch without it is in force.
    pub fn removed(&self) -> bool {
        self.removed
    }

    pub(crate) fn track(&mut self, pool: &Pool, me: NodeId, ready: &mut Ready) {
        let finalized = pool.finalized_height();
        if self.at == Some(finalized) {
            ready.removed = self.removed;
            return;
        }
        self.at = Some(finalized);
        let round = finalized.next();
        let pending = IntervalChain::finalized(pool).map(|c| c.pending_registry());
        if let Some(epoch) = epoch_for_round(pool, round) {
            let in_force = epoch.registry.members.contains_key(&me);
            let next = pending
                .as_ref()
                .is_some_and(|r| r.members.contains_key(&me));
            if in_force || next {
                self.was_member = true;
            } else if self.was_member && pending.is_some() {
                self.removed = true;
            }
        }
        ready.removed = self.removed;
        ready.peers = Some(peers(pool, round, pending.as_ref()));
    }
}

/// Every node the registries in play name, once each.
fn peers(pool: &Pool, round: Height, pending: Option<&Registry>) -> Vec<NodeRecord> {
    let summary = finalized_summary(pool, summary_height_for_round(pool, round));
    let registries = summary
        .into_iter()
        .flat_map(|s| [&s.current.registry, &s.pending])
        .chain(pending);
    let mut records = BTreeMap::new();
    for r in registries.flat_map(|r| r.members.values()) {
        records.insert(r.node_id, r.clone());
    }
    records.into_values().collect()
}
