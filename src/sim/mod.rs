//! Simulators and load tools used by tests and benches: an HTTP(S) client, a bare server, the
//! webhook load generator behind `switchboard-load`, and the Graph API simulator behind
//! `switchboard-sim`.
pub mod bare;
pub mod client;
pub mod graph;
pub mod load;
pub mod outbound_load;
