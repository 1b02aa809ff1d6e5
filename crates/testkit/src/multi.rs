//! The pieces of a multi-machine setup on loopback: `tilepipe serve`
//! render nodes as child processes, each on its own loopback address
//! (127.0.0.2, 127.0.0.3, …) with an HTTP port and a renderd protocol TCP
//! port, drawing from a database given to it (a streaming standby made
//! with [`PgCluster::start_standby`](crate::PgCluster::start_standby)).
//! A node can be killed and started again on the same ports and cache.

use crate::paths::tilepipe_bin;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on `ip` right now.
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `tilepipe serve` child process; killed on drop.
pub struct ServeNode {
    /// Its name (as in `expire.nodes`).
    pub name: String,
    /// The loopback address it listens on.
    pub ip: Ipv4Addr,
    /// Its HTTP port.
    pub http_port: u16,
    /// Its renderd protocol TCP port.
    pub renderd_port: u16,
    /// Its tile cache.
    pub tile_dir: PathBuf,
    config: PathBuf,
    database: String,
    log: PathBuf,
    child: Option<Child>,
}

impl ServeNode {
    /// Writes the node's configuration into `dir` (one style: `style` is
    /// its name and XML, reading `database`; `serve_extra` is appended to
    /// the `serve:` section, indented) and starts it; waits until it
    /// answers `/health`.
    pub fn start(
        dir: &Path,
        name: &str,
        ip: Ipv4Addr,
        style: (&str, &Path),
        database: &str,
        serve_extra: &str,
    ) -> ServeNode {
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir).unwrap();
        let tile_dir = node_dir.join("tiles");
        let (http_port, renderd_port) = (free_port_on(ip), free_port_on(ip));
        let config = node_dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "styles:\n  - name: {style_name}\n    xml: {xml}\n    tile_dir: {tiles}\n    database: \"{database}\"\n    min_zoom: 0\n    max_zoom: 18\n\
                 render:\n  threads: 1\n  tcp: {ip}:{renderd_port}\n\
                 serve:\n  listen: {ip}:{http_port}\n{serve_extra}",
                style_name = style.0,
                xml = style.1.display(),
                tiles = tile_dir.display(),
            ),
        )
        .unwrap();
        let mut node = ServeNode {
            name: name.to_string(),
            ip,
            http_port,
            renderd_port,
            tile_dir,
            config,
            database: database.to_string(),
            log: node_dir.join("serve.log"),
            child: None,
        };
        node.restart();
        node
    }

    /// `host:port` of its renderd protocol listener.
    pub fn renderd_addr(&self) -> String {
        format!("{}:{}", self.ip, self.renderd_port)
    }

    /// `GET path` on the node.
    pub fn get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        crate::http::get_from(self.ip, self.http_port, path)
    }

    /// Kills the process at once (SIGKILL), as a crash or a power cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process (again), same ports and cache; waits for
    /// `/health`.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(tilepipe_bin());
        command
            .args(["-c", self.config.to_str().unwrap(), "-d", &self.database])
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it ties the node to the
        // test thread that started it, so no node outlives a killed test.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(command.spawn().expect("tilepipe serve starts"));
        let started = Instant::now();
        while self.get("/health").is_none_or(|(status, _)| status != 200) {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("node {} exited: {status}\n{}", self.name, self.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "node {} did not start\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The file the node logs to (across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the node logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServeNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `corners` (a building's nodes) moved east by `dlon` degrees, each as
/// its version plus `bump`: the edit the multi-node test and bench publish.
pub fn moved_east(
    corners: &[tilepipe::osm::Node],
    dlon: f64,
    bump: u32,
) -> Vec<tilepipe::osm::changeset::Change> {
    use tilepipe::osm::changeset::{Action, Change};
    corners
        .iter()
        .map(|node| {
            let mut node = node.clone();
            let at = node.location.expect("a building corner has a location");
            node.location = Some(tilepipe::osm::Location {
                lon: at.lon + dlon,
                lat: at.lat,
            });
            node.meta.version = node.meta.version.map(|v| v + bump);
            Change {
                action: Action::Modify,
                object: tilepipe::osm::Object::Node(node),
            }
        })
        .collect()
}
