//! Serving benchmark (wrk against tilepipe and Apache + mod_tile); being written.
fn main() {}
