//! Where the tests find the repository, the `tilepipe` binary and the
//! shared OSM data beside the clone.

use std::path::{Path, PathBuf};

/// The workspace root (the `tilepipe` crate's directory).
pub fn repo_root() -> PathBuf {
    // crates/testkit → the workspace; no `..` in paths tests compare.
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit.ancestors().nth(2).unwrap().to_path_buf()
}

/// A file of the repository, by its path from the workspace root.
pub fn repo_file(relative: &str) -> PathBuf {
    repo_root().join(relative)
}

/// True when running in CI (`CI=true`, as `.ci/run` is started there).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `../shared/data/<name>` beside the clone, or `None` after saying the
/// test is skipped when it is absent. In CI, where the shared directory is
/// always present, a missing file fails the test instead: a skip there
/// would hide that the test never ran.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let path = repo_root().join("../shared/data").join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "{} not found, but CI must have ../shared/data (CI is set)",
        path.display()
    );
    eprintln!("skipping: {} not found", path.display());
    None
}

/// The `tilepipe` binary cargo built with the tests or benches running now.
///
/// Cargo tells its path only while compiling the root crate's own tests
/// (`CARGO_BIN_EXE_tilepipe`); at run time a test or bench executable sits
/// in `target/<profile>/deps/`, and the binary one level up.
pub fn tilepipe_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("tilepipe"))
        .filter(|bin| bin.is_file());
    bin.unwrap_or_else(|| {
        panic!(
            "no tilepipe binary beside {} (cargo builds it for the root crate's tests)",
            exe.display()
        )
    })
}
