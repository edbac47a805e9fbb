//! The WhatsApp Business Cloud API at the front door: webhook authentication
//! ([`signature`]) and the webhook payload parser ([`payload`]).
//!
//! A POST is handled as: [`verify`] the `X-Hub-Signature-256` header over the
//! raw body bytes, then [`parse_delivery`] splits the body into journal
//! [`Event`](crate::event::Event)s. The GET handshake compares the verify
//! token with [`verify_token_matches`].
//!
//! Invariants:
//! - Everything here reads untrusted input: no panics, no unbounded or
//!   super-linear work, no allocation beyond a small multiple of the body.
//! - Parsing never re-serialises: each event's `raw` is a slice of the body
//!   as received (see `event.rs`).
//! - Only the shape of the whole body can make a delivery fail (a 400);
//!   anything wrong inside it becomes an `InvalidEvent`, kept and counted.

// First: its `absent_for!` macro is used by the view modules.
#[macro_use]
mod lenient;
mod account;
pub mod payload;
pub mod signature;
mod views;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod payload_tests;

use std::path::PathBuf;

pub use payload::{dedupe_hash, parse_delivery, Delivery, NumberDirectory, PayloadError};
pub use signature::{sign, verify, verify_token_matches, AppKeys, SignatureError};

/// Where the shared webhook fixtures live unless `SWITCHBOARD_FIXTURES` says
/// otherwise.
pub const DEFAULT_FIXTURES_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/whatsapp");

/// The WhatsApp webhook fixture directory (`SWITCHBOARD_FIXTURES`, else
/// [`DEFAULT_FIXTURES_DIR`]); shared by unit, integration and bench code.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("SWITCHBOARD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FIXTURES_DIR))
}
