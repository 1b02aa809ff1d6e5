//! The test kit's own tests as one test binary (each file of `tests/` a
//! module), so the kit and tilepipe are linked once, not once per file.

mod cli;
mod common;
mod feedgen;
mod feedserver;
mod pg;
mod scale_cli;
