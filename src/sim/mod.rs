//! Simulators and load tools used by tests and benches: an HTTP(S) client and a bare server.
pub mod bare;
pub mod client;
