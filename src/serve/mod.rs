//! The serve stage (not implemented yet; see the issue tracker).
