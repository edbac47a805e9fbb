//! Conversation routing to agents (in progress).
