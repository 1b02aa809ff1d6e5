//! Database connections.
