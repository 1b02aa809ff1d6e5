//! Compiles `src/shim.cpp` against the system Mapnik (found with
//! `mapnik-config`, overridable with the `MAPNIK_CONFIG` environment
//! variable) and links `libmapnik`.

use std::env;
use std::process::Command;

fn mapnik_config(tool: &str, args: &[&str]) -> String {
    let out = match Command::new(tool).args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "mapnik-sys: cannot run `{tool}` ({e}). Mapnik 3.1 development files are needed: \
             on Debian/Ubuntu `apt-get install libmapnik-dev`, or set MAPNIK_CONFIG to the \
             path of mapnik-config."
        ),
    };
    if !out.status.success() {
        panic!(
            "mapnik-sys: `{tool} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout)
        .expect("mapnik-config prints UTF-8")
        .trim()
        .to_string()
}

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MAPNIK_CONFIG");

    let tool = env::var("MAPNIK_CONFIG").unwrap_or_else(|_| "mapnik-config".to_string());
    let version = mapnik_config(&tool, &["--version"]);
    if !version.starts_with("3.") {
        panic!("mapnik-sys: Mapnik 3.x is needed, `{tool} --version` says {version}");
    }
    let cflags = mapnik_config(&tool, &["--cflags"]);
    let libs = mapnik_config(&tool, &["--libs"]);
    let plugins = mapnik_config(&tool, &["--input-plugins"]);
    let fonts = mapnik_config(&tool, &["--fonts"]);

    let mut build = cc::Build::new();
    build.cpp(true).file("src/shim.cpp").flag("-std=c++14");
    build
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra");
    // Only the include dirs and defines are taken from mapnik-config: the
    // defines change class layouts, the rest (optimisation, hardening,
    // visibility, file-prefix-map) is the packager's business. Mapnik's
    // include dirs are system dirs so that its headers do not warn.
    let mut seen = Vec::new();
    for tok in cflags.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-I") {
            // /usr/include is searched already; making it -isystem would
            // break libstdc++'s #include_next.
            if dir == "/usr/include" || dir == "/usr/local/include" || seen.contains(&dir) {
                continue;
            }
            seen.push(dir);
            build.flag("-isystem").flag(dir);
        } else if let Some(def) = tok.strip_prefix("-D") {
            match def.split_once('=') {
                Some((k, v)) => build.define(k, Some(v)),
                None => build.define(def, None),
            };
        }
    }
    build.compile("tilepipe_mapnik_shim");

    for tok in libs.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = tok.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        }
    }
    println!("cargo:rustc-env=MAPNIK_INPUT_PLUGINS_DIR={plugins}");
    println!("cargo:rustc-env=MAPNIK_FONTS_DIR={fonts}");
    println!("cargo:rustc-env=MAPNIK_VERSION={version}");
}
