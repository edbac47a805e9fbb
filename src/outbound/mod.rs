//! Outbound delivery: what Switchboard sends through the Graph API, and the
//! rules it enforces before sending (in progress).
pub mod filter;
