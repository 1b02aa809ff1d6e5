//! The Debian package `scripts/build-deb` makes, built from this test
//! build's binary and installed with dpkg into a throwaway root (dpkg's
//! own database there, maintainer scripts run without chroot): its files,
//! conffile and dependencies, the directories its postinst makes, the
//! installed binary's version and its config check, and purge.

use std::path::Path;
use std::process::Command;

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn the_package_installs_into_a_throwaway_root_and_runs() {
    if !have("dpkg-deb") || !have("dpkg-shlibdeps") {
        assert!(
            std::env::var_os("CI").is_none(),
            "dpkg-deb and dpkg-shlibdeps (dpkg-dev) are required in CI"
        );
        eprintln!("skipping: dpkg-deb or dpkg-shlibdeps missing (install dpkg-dev)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let deb = run(Command::new(repo.join("scripts/build-deb"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_tilepipe"))
        .arg("--out")
        .arg(dir.path()));
    let deb = Path::new(deb.trim());
    assert!(deb.is_file(), "{}", deb.display());

    // Control data: the package, its conffile and dependencies that the
    // archive knows (so `apt install ./tilepipe_….deb` can resolve them).
    let version = env!("CARGO_PKG_VERSION");
    let field = |name: &str| {
        run(Command::new("dpkg-deb")
            .args(["--field"])
            .arg(deb)
            .arg(name))
    };
    assert_eq!(field("Package").trim(), "tilepipe");
    assert_eq!(field("Version").trim(), format!("{version}-1"));
    let depends = field("Depends");
    for needed in [
        "libmapnik3.1",
        "fonts-dejavu-core",
        "libjs-leaflet",
        "adduser",
        "libc6",
    ] {
        assert!(
            depends.contains(needed),
            "Depends lacks {needed}: {depends}"
        );
    }
    if have("apt-cache") {
        for package in depends.split(',') {
            let name = package.split_whitespace().next().unwrap();
            let known = Command::new("apt-cache")
                .args(["show", name])
                .output()
                .unwrap();
            assert!(
                known.status.success(),
                "dependency {name} is unknown to apt"
            );
        }
    }
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    for path in [
        "./usr/bin/tilepipe",
        "./lib/systemd/system/tilepipe.service",
        "./etc/tilepipe/config.yaml",
        "./usr/share/tilepipe/styles/tilepipe.xml",
        "./usr/share/tilepipe/styles/tilepipe-flex.lua",
        "./usr/share/tilepipe/prometheus/tilepipe-rules.yml",
        "./usr/share/tilepipe/grafana/tilepipe-dashboard.json",
        "./usr/share/doc/tilepipe/copyright",
    ] {
        assert!(
            contents.contains(path),
            "{path} missing from the package:\n{contents}"
        );
    }

    // Install into a root of its own.
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = || {
        let mut command = Command::new("dpkg");
        command.arg(format!("--root={}", root.display())).args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ]);
        command
    };
    run(dpkg().arg("-i").arg(deb));
    let status = run(dpkg().args(["-s", "tilepipe"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("Conffiles:\n /etc/tilepipe/config.yaml"),
        "{status}"
    );
    assert!(root.join("var/cache/tilepipe/tiles").is_dir());
    assert!(root.join("var/lib/tilepipe").is_dir());
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/tilepipe.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/tilepipe -c /etc/tilepipe/config.yaml run"));

    // The installed binary runs, and reads the installed config.
    let binary = root.join("usr/bin/tilepipe");
    let shown = run(Command::new(&binary).arg("--version"));
    assert_eq!(shown.trim(), format!("tilepipe {version}"));
    let config = root.join("etc/tilepipe/config.yaml");
    let check = Command::new(&binary)
        .arg("-c")
        .arg(&config)
        .arg("check")
        // No database here: the checks after the config fail or skip.
        .env("PGHOST", dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("config")),
        "{printed}"
    );
    let installed_config = std::fs::read_to_string(&config).unwrap();
    assert!(installed_config.contains("leaflet_dir: /usr/share/javascript/leaflet"));

    // Purge removes the package and the directories the postinst made.
    run(dpkg().args(["-P", "tilepipe"]));
    assert!(!binary.exists());
    assert!(!root.join("var/cache/tilepipe").exists());
}
