//! Deterministic simulation of a Thicket subnet: n replicas in one process, each running the
//! real consensus with real BLS and Ed25519 keys over its own pool, connected by a simulated
//! network on a virtual clock. Everything random comes from the seed, so a seed replays exactly.
//!
//! The replicas share one memo of BLS pairing checks
//! ([`thicket_crypto::bls::enable_shared_verification_cache`]): n replicas verify the same
//! share n times, and the memo makes that one real pairing check. It changes no outcome.
//!
//! # Layout
//! - [`config`]: parameters, Byzantine behaviours and the fault specifications of the CLI;
//! - [`node`]: one replica (consensus, pool, toy execution) and what it re-sends;
//! - [`byzantine`]: how faulty replicas rewrite their artifacts;
//! - [`sim`]: the event loop, network, membership changes and the checkers;
//! - [`report`]: per-run results and the multi-seed summary.
//!
//! ```text
//!  seed ─► genesis DKG ─► nodes ─► event queue (deliver / wake / retransmit / crash)
//!                                    │
//!             node.step(now): consensus roles ─► pool.apply ─► gossip ─► deliver blocks
//!                                    │
//!             checker: same block per height? progress after heal? same subnet key?
//! ```

pub mod byzantine;
pub mod config;
pub mod node;
pub mod report;
pub mod sim;

pub use config::SimConfig;
pub use report::{RunReport, Summary};
pub use sim::Simulation;

/// Runs one seed.
pub fn run(cfg: SimConfig) -> anyhow::Result<RunReport> {
    Ok(Simulation::new(cfg)?.run())
}
