//! The render stage (not implemented yet; see the issue tracker).
