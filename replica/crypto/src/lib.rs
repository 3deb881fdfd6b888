//! Thicket's cryptography: the pure math under the IC protocol, on BLS12-381 (`blst` through
//! `blstrs`) and Ed25519 (`ed25519-dalek`). No protocol types, no I/O.
//!
//! # Layout
//! - [`bls`]: hashing to G1 with the IC's DSTs, the pairing check, scalar hashing.
//! - [`polynomial`]: secret polynomials, Lagrange interpolation at zero.
//! - [`multi_sig`]: BLS multi-signatures with proof of possession (notarization, finalization).
//! - [`threshold`]: threshold BLS: shares, public coefficients, combination, verification.
//! - [`dkg`]: dealer-less distributed key generation and resharing with public complaints.
//! - [`dleq`]: Chaum–Pedersen proofs of equal discrete logarithms (used by DKG complaints).
//! - [`node_key`]: Ed25519 node signing keys (block proposals).
//!
//! Conventions follow the IC (min-sig): signatures are G1 points (48 bytes compressed), public
//! keys G2 points (96 bytes compressed).
//!
//! ```text
//!  deal ──► verify_dealing ──► decrypt_share ─(bad)─► complaint ──► verify_complaint
//!                 │                                                      │
//!                 └──────────► create_transcript (qualified dealers) ◄───┘
//!                                   │
//!            public coefficients ◄──┴──► receiver_share ──► threshold::sign_share ──► combine
//! ```

pub mod bls;
pub mod dkg;
pub mod dleq;
pub mod multi_sig;
pub mod node_key;
pub mod polynomial;
pub mod threshold;

pub use blstrs::{self, Scalar};

/// Why a cryptographic check failed. Every variant is a permanent verdict on the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("signature does not verify")]
    InvalidSignature,
    #[error("proof of possession does not verify")]
    InvalidPop,
    #[error("malformed encoding: {0}")]
    Malformed(&'static str),
    #[error("not enough signature shares: have {have}, need {need}")]
    NotEnoughShares { have: usize, need: usize },
    #[error("duplicate share index {0}")]
    DuplicateIndex(u32),
    #[error("invalid dealing: {0}")]
    InvalidDealing(String),
    #[error("invalid complaint: {0}")]
    InvalidComplaint(&'static str),
    #[error("not enough valid dealings: have {have}, need {need}")]
    NotEnoughDealings { have: usize, need: usize },
    #[error("resharing changed the public key")]
    ResharingChangedKey,
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}
