//! How a replica conducts itself. The daemon is [`Honest`]: it applies what the roles decided
//! and sends each new artifact to every peer. The simulator's Byzantine replicas implement
//! [`Conduct`] to rewrite their mutations and what they send, with their real keys, so that
//! the honest replicas they attack run exactly the daemon's core. The fault harness runs the
//! same conducts in daemon processes (`thicket-faults replica`), against honest ones over gRPC.

use thicket_consensus::keys::NodeSecrets;
use thicket_consensus::pool::{Mutation, Pool};
use thicket_types::artifacts::ConsensusMessage;

use crate::To;

/// What a conduct may look at: the replica's pool and its secrets.
pub struct Context<'a> {
    pub pool: &'a Pool,
    pub secrets: &'a NodeSecrets,
}

pub trait Conduct {
    /// The mutations of one round, before they are stored and applied; may add messages to
    /// send that the pool never sees.
    fn rewrite(
        &mut self,
        _cx: &Context<'_>,
        mutations: Vec<Mutation>,
    ) -> (Vec<Mutation>, Vec<(To, ConsensusMessage)>) {
        (mutations, vec![])
    }

    /// How one artifact this replica made leaves it.
    fn send(&mut self, _cx: &Context<'_>, msg: ConsensusMessage) -> Vec<(To, ConsensusMessage)> {
        vec![(To::All, msg)]
    }

    /// Whether valid artifacts received from peers are relayed (blocks and aggregates).
    fn relays(&self) -> bool {
        true
    }

    /// What an artifact sent again (retransmission, or an answer to a fetch) looks like.
    fn disguise(&self, _cx: &Context<'_>, msg: ConsensusMessage) -> ConsensusMessage {
        msg
    }
}

/// A conduct chosen at run time: the daemon's is honest unless a test binary gives another.
impl<C: Conduct + ?Sized> Conduct for Box<C> {
    fn rewrite(
        &mut self,
        cx: &Context<'_>,
        mutations: Vec<Mutation>,
    ) -> (Vec<Mutation>, Vec<(To, ConsensusMessage)>) {
        (**self).rewrite(cx, mutations)
    }

    fn send(&mut self, cx: &Context<'_>, msg: ConsensusMessage) -> Vec<(To, ConsensusMessage)> {
        (**self).send(cx, msg)
    }

    fn relays(&self) -> bool {
        (**self).relays()
    }

    fn disguise(&self, cx: &Context<'_>, msg: ConsensusMessage) -> ConsensusMessage {
        (**self).disguise(cx, msg)
    }
}

/// The protocol as written.
#[derive(Clone, Copy, Debug, Default)]
pub struct Honest;

impl Conduct for Honest {}
