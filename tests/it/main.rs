//! Integration tests: one harness (`harness.rs`) that runs the real daemon
//! binary on 127.0.0.1:0 with TLS, and suites per concern.

mod harness;

mod api;
mod bad_input;
mod clock;
mod crash;
mod dedupe;
mod disk_full;
mod fixtures;
mod hostile;
mod lifecycle;
mod metrics;
mod notify;
mod outbound;
mod reload;
mod signature;
mod statuses;
mod torn_journal;
