//! The routing service: the single writer that owns the engine in the daemon.
