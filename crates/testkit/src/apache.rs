//! Debian's Apache 2 with mod_tile on a private loopback port, beside
//! which tilepipe's serving is compared.

use crate::find_in_path;
use crate::http::free_port;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
/// Debian's Apache 2 with mod_tile serving `tile_dir` (layer `/<style>/`)
/// on a private loopback port, from its own configuration in a
/// temporary directory; killed on drop.
pub struct Apache {
    child: Child,
    /// ServerRoot: `httpd.conf`, the pid file and the logs; removed on drop.
    pub dir: tempfile::TempDir,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

/// Where Debian's `libapache2-mod-tile` installs the module.
pub const MOD_TILE: &str = "/usr/lib/apache2/modules/mod_tile.so";

impl Apache {
    /// `None` (after saying why) when apache2 or mod_tile is not installed.
    pub fn start(tile_dir: &Path, style: &str, threads: u32) -> Option<Apache> {
        Self::start_with_renderd(tile_dir, style, threads, None)
    }

    /// With `renderd`, mod_tile asks that socket to render missing and
    /// dirty tiles (waiting up to 30 s for a missing one); without, it has
    /// no renderer and answers a missing tile 404 at once.
    pub fn start_with_renderd(
        tile_dir: &Path,
        style: &str,
        threads: u32,
        renderd: Option<&Path>,
    ) -> Option<Apache> {
        let Some(apache) = find_in_path("apache2") else {
            eprintln!("skipped: apache2 is not installed (apt-get install apache2)");
            return None;
        };
        if !Path::new(MOD_TILE).is_file() {
            eprintln!("skipped: mod_tile is not installed (apt-get install libapache2-mod-tile)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let port = free_port();
        // Apache started as root serves from children running as nobody:
        // they must be able to read the tiles.
        let is_root = geteuid() == 0;
        if is_root {
            make_world_readable(tile_dir);
            make_world_readable(root);
        }
        let user = if is_root {
            "User nobody\nGroup nogroup\n"
        } else {
            ""
        };
        let conf = format!(
            "ServerRoot {root}\nListen 127.0.0.1:{port}\nPidFile {root}/httpd.pid\n\
             ErrorLog {root}/error.log\nLogLevel warn\nDefaultRuntimeDir {root}\n\
             Mutex file:{root} default\nServerName localhost\n{user}\
             LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
             LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
             LoadModule tile_module {MOD_TILE}\n\
             StartServers 2\nServerLimit 4\nThreadsPerChild {threads}\nMaxRequestWorkers {max}\n\
             ThreadLimit {threads}\nMinSpareThreads {threads}\nMaxSpareThreads {max}\n\
             KeepAliveTimeout 30\nMaxKeepAliveRequests 0\n\
             ModTileTileDir {tiles}\nModTileRenderdSocketName {socket}\n\
             ModTileRequestTimeout {timeout}\nModTileMissingRequestTimeout {missing_timeout}\n\
             ModTileEnableStats Off\n\
             AddTileConfig /{style}/ {style}\n",
            root = root.display(),
            tiles = tile_dir.display(),
            max = threads * 2,
            socket = renderd.map_or_else(
                || format!("{}/no-renderd.sock", root.display()),
                |s| s.display().to_string()
            ),
            timeout = if renderd.is_some() { 3 } else { 0 },
            missing_timeout = if renderd.is_some() { 30 } else { 0 },
        );
        std::fs::write(root.join("httpd.conf"), conf).unwrap();
        let log = std::fs::File::create(root.join("stdout.log")).unwrap();
        let child = std::process::Command::new(apache)
            .arg("-f")
            .arg(root.join("httpd.conf"))
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut apache = Apache { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = apache.child.try_wait().unwrap() {
                panic!("apache2 exited ({status}):\n{}", apache.log());
            }
            assert!(
                Instant::now() < deadline,
                "apache2 does not listen:\n{}",
                apache.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(apache)
    }

    /// Apache's stdout/stderr followed by its `error.log`, for failure
    /// messages.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("error.log"))
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // SIGTERM lets Apache stop its children; then make sure.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process's effective user id.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// chmod a+rX on `dir` and every ancestor's search bit, recursively below.
pub fn make_world_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        if let Ok(meta) = std::fs::metadata(a) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o011));
            }
        }
        ancestor = a.parent();
    }
    fn walk(path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode();
        let want = if meta.is_dir() {
            mode | 0o755
        } else {
            mode | 0o644
        };
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(want));
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path());
            }
        }
    }
    walk(dir);
}
