//! The checkers: what honest replicas send (the finalizer's signing rule; one certification
//! share per height) and what they deliver and certify (one block and one state root per
//! height across all of them).

use thicket_types::Height;
use thicket_types::artifacts::ConsensusMessage;

use super::Simulation;

impl Simulation {
    /// Counts a signing rule broken by `from`: against the honest replicas, or, for one that
    /// lost its store (and counts as faulty), apart.
    fn broke_rule(&mut self, from: usize) {
        if self.nodes[from].amnesiac {
            self.amnesiac_double_signing += 1;
        } else {
            self.double_signing += 1;
        }
    }

    /// The finalizer's rule, checked on what honest replicas send (their memory may be lost in
    /// a crash, their disk may not): never a finalization share at a height where the replica
    /// notarization-signed another block, never two finalization shares at one height.
    pub(super) fn check_signing(&mut self, from: usize, msg: &ConsensusMessage) {
        let key = |h: Height| (from, h);
        match msg {
            ConsensusMessage::NotarizationShare(s) => {
                let h = s.content.height;
                self.signed_notarizations
                    .entry(key(h))
                    .or_default()
                    .insert(s.content.block);
                if self
                    .signed_finalizations
                    .get(&key(h))
                    .is_some_and(|b| *b != s.content.block)
                {
                    self.broke_rule(from)
                }
            }
            ConsensusMessage::FinalizationShare(s) => {
                let h = s.content.height;
                let other_notarized = self
                    .signed_notarizations
                    .get(&key(h))
                    .is_some_and(|set| set.iter().any(|b| *b != s.content.block));
                let previous = self.signed_finalizations.insert(key(h), s.content.block);
                if other_notarized || previous.is_some_and(|b| b != s.content.block) {
                    self.broke_rule(from)
                }
            }
            ConsensusMessage::CertificationShare(s) => {
                let previous = self
                    .signed_certifications
                    .insert(key(s.content.height), s.content.root);
                if previous.is_some_and(|r| r != s.content.root) {
                    self.broke_rule(from)
                }
            }
            _ => {}
        }
    }

    /// Records honest deliveries and checks them against every other honest replica's.
    pub(super) fn observe(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if !node.is_honest() {
            node.delivered.clear();
            return;
        }
        for (h, hash) in node.delivered.drain(..) {
            match self.chain.get(&h) {
                Some(existing) if *existing != hash => self.safety_violations += 1,
                Some(_) => {}
                None => {
                    self.chain.insert(h, hash);
                }
            }
        }
        for (h, root) in node.certified.drain(..) {
            match self.certified.get(&h) {
                Some(existing) if *existing != root => self.safety_violations += 1,
                Some(_) => {}
                None => {
                    self.certified.insert(h, root);
                }
            }
        }
        let fh = node.core.pool().finalized_height().max(node.exec.executed);
        if fh > self.last_progress.1 {
            self.last_progress = (self.now, fh);
        }
    }
}
