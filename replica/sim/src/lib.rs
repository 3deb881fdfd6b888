//! Deterministic simulation of a Thicket subnet: n replicas in one process, each running the
//! replica core the daemon runs (`thicket-core`: consensus, admission, certification,
//! membership, catch-up) with real BLS and Ed25519 keys, connected by a simulated network on a
//! virtual clock. Only time, the network, the disk and execution (a hash chain) are simulated.
//! Everything random comes from the seed, so a seed replays exactly.
//!
//! The replicas share one memo of BLS pairing checks
//! ([`thicket_crypto::bls::enable_shared_verification_cache`]): n replicas verify the same
//! share n times, and the memo makes that one real pairing check. It changes no outcome.
//!
//! # Layout
//! - [`config`]: parameters, Byzantine behaviours and the fault specifications of the CLI;
//! - [`replica`]: one replica: the core, its disk and toy execution, carrying out the core's
//!   commands as the daemon's driver does;
//! - [`byzantine`]: the conduct through which faulty replicas rewrite their artifacts;
//! - [`sim`]: the event loop, network, membership changes and the checkers;
//! - [`report`]: per-run results and the multi-seed summary.
//!
//! ```text
//!  seed ─► genesis DKG ─► nodes ─► event queue (deliver / wake / retransmit / fetch / crash)
//!                                    │
//!             node: Core::step(event, now) ─► persist ─► send ─► execute ─► Event::Executed
//!                                    │
//!             checker: same block and certified root per height? no double signing?
//!                      progress after heal? same subnet key?
//! ```

pub mod byzantine;
pub mod config;
pub mod replica;
pub mod report;
pub mod sim;

pub use config::SimConfig;
pub use report::{RunReport, Summary};
pub use sim::Simulation;

/// Runs one seed.
pub fn run(cfg: SimConfig) -> anyhow::Result<RunReport> {
    Ok(Simulation::new(cfg)?.run())
}
