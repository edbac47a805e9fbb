//! Simulators and load tools used by tests and benches: an HTTP(S) client, a bare server, and
//! the webhook load generator behind `switchboard-load`.
pub mod bare;
pub mod client;
pub mod load;
