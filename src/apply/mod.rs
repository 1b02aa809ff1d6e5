//! The apply stage (not implemented yet; see the issue tracker).
