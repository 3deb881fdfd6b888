//! Thicket's protocol types: newtypes for heights, ranks and node ids, content-addressed
//! hashing, the registry, blocks and every consensus artifact. No I/O, no logic beyond
//! encoding and hashing; the consensus crate gives these types meaning.
//!
//! # Layout
//! - [`ids`]: `Height`, `Rank`, `NodeId`, `CryptoHash`, canonical encoding and hashing.
//! - [`registry`]: node and subnet records, admin-signed registry changes.
//! - [`block`]: blocks, payloads, DKG summaries.
//! - [`ingress`]: IC `call` messages and their request ids.
//! - [`state`]: checkpoint manifests and chunks for state sync.
//! - [`artifacts`]: beacons, notarizations, finalizations, shares, catch-up packages, and the
//!   [`artifacts::ConsensusMessage`] that travels between replicas.
//!
//! Signing always covers `domain ‖ canonical bytes` of the content, with a domain per artifact
//! kind, so a signature on one kind can never be replayed as another.
//!
//! Depends on `thicket-crypto` for the key and signature types it carries (crypto is the pure
//! math layer below every protocol type).

pub mod artifacts;
pub mod block;
pub mod ids;
pub mod ingress;
pub mod registry;
pub mod state;

pub use ids::{CryptoHash, Height, NodeId, Rank, canonical_bytes, hash_of, signing_bytes};
