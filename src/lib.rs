//! Switchboard: the control backend for WhatsApp Business Cloud API numbers.
//!
//! The library holds everything; `main.rs` only parses the command line.
//! Dependencies point one way: `http` and `sim` use the core
//! (`pipeline`, `store`, `journal`, `query`), never the reverse.
#![forbid(unsafe_code)]

pub mod auth;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod event;
pub mod http;
pub mod journal;
pub mod outbound;
pub mod pipeline;
pub mod query;
pub mod reload;
pub mod routing;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod whatsapp;
