//! The HTTPS front door: TLS material, the bounded connection server, the metrics listener.
pub mod metrics_server;
pub mod server;
pub mod tls;
