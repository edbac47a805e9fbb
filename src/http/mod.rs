//! The HTTPS front door: TLS material, the bounded connection server, the
//! metrics listener, and the application (router, webhook endpoint, read
//! API, OpenAPI document).
//!
//! This is the edge: it depends on the core (`pipeline`, `query`,
//! `whatsapp`), never the other way round.
pub mod api;
pub mod app;
pub mod metrics_server;
pub mod openapi;
pub mod response;
pub mod routing_api;
pub mod server;
pub mod tls;
pub mod webhook;
