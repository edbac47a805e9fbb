//! The sensitive-word filter (in progress).
