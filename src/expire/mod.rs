//! The expire stage (not implemented yet; see the issue tracker).
