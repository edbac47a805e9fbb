//! The WhatsApp Business Cloud API at the front door: webhook authentication
//! ([`signature`]).
//!
//! Invariants:
//! - Everything here reads untrusted input: no panics, no unbounded work.

pub mod signature;

pub use signature::{sign, verify, verify_token_matches, AppKeys, SignatureError};
