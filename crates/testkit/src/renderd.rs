//! Debian's renderd (mod_tile 0.6.1 with Mapnik) as a child process for
//! tests and benchmarks: a `renderd.conf` written into a work directory,
//! `renderd -f -c renderd.conf` spawned with its output in `renderd.log`,
//! and a wait until its socket (or TCP port) accepts connections. The
//! process is killed (and reaped) when the [`Renderd`] is dropped.
//!
//! ```no_run
//! use tilepipe_testkit::renderd::Renderd;
//! # let xml = std::path::PathBuf::from("style.xml");
//! let renderd = Renderd::builder()
//!     .style("tilepipe", &xml)
//!     .num_threads(2)
//!     .plugins_dir("/usr/lib/mapnik/3.1/input")
//!     .start()
//!     .unwrap_or_else(|e| panic!("{e}"));
//! println!("{:?} {}", renderd.endpoint(), renderd.tile_dir().display());
//! ```
//!
//! Tests that pass when renderd is missing use
//! [`RenderdBuilder::start_or_skip`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tilepipe::renderd::Endpoint;

/// `program` on `PATH` (a bare name), else in /usr/sbin or /usr/bin
/// (where Debian puts renderd and apache2, not always on a user's `PATH`),
/// or `program` itself when it is a path to a file.
pub fn find_in_path(program: impl AsRef<Path>) -> Option<PathBuf> {
    let program = program.as_ref();
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Runs `command` with `input` on its stdin (mod_tile's tools read their
/// tile lists there) and waits for it, capturing stdout and stderr. The
/// input is written before the output is read, so it must fit a pipe
/// (64 kB) unless the program reads it all before writing much.
pub fn output_with_stdin(command: &mut Command, input: &str) -> std::io::Result<Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())?;
    child.wait_with_output()
}

/// Where a style's XML comes from.
enum StyleXml {
    /// A file of the caller's (its relative paths resolve from there).
    File(PathBuf),
    /// Text written to `<work dir>/<name>.xml`.
    Text(String),
}

/// One `[name]` section of renderd.conf.
struct Style {
    name: String,
    xml: StyleXml,
    /// `TILEDIR`; renderd's `tile_dir` when `None`.
    tile_dir: Option<PathBuf>,
}

enum Listen {
    /// `socketname`; `<work dir>/renderd.sock` when `None`.
    Unix(Option<PathBuf>),
    /// `iphostname` and `ipport`; port 0 picks a free one.
    Tcp { host: String, port: u16 },
}

/// What [`Renderd::builder`] returns: the settings of renderd.conf and of
/// the start-up, each with a default.
pub struct RenderdBuilder {
    program: PathBuf,
    dir: Option<PathBuf>,
    tile_dir: Option<PathBuf>,
    styles: Vec<Style>,
    num_threads: usize,
    listen: Listen,
    plugins_dir: Option<PathBuf>,
    font_dir: PathBuf,
    font_dir_recurse: bool,
    timeout: Duration,
}

impl RenderdBuilder {
    /// The renderd binary: a name looked up on `PATH` or a path. Default
    /// `renderd`.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The work directory for renderd.conf, renderd.log, the stats, pid
    /// and socket files and (by default) the tiles. Default: a temporary
    /// directory the [`Renderd`] owns and removes; a given one is kept.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// renderd's `tile_dir`, created when missing. Default
    /// `<work dir>/tiles`.
    pub fn tile_dir(mut self, tile_dir: impl Into<PathBuf>) -> Self {
        self.tile_dir = Some(tile_dir.into());
        self
    }

    /// A style `name` (its URI `/name/`) from the XML file `xml`, writing
    /// into renderd's tile directory.
    pub fn style(self, name: &str, xml: impl Into<PathBuf>) -> Self {
        self.add_style(name, StyleXml::File(xml.into()), None)
    }

    /// A style as [`style`](Self::style) with a `TILEDIR` of its own.
    pub fn style_with_tile_dir(
        self,
        name: &str,
        xml: impl Into<PathBuf>,
        tile_dir: impl Into<PathBuf>,
    ) -> Self {
        self.add_style(name, StyleXml::File(xml.into()), Some(tile_dir.into()))
    }

    /// A style whose XML text is written to `<work dir>/<name>.xml`.
    pub fn inline_style(self, name: &str, xml: &str) -> Self {
        self.add_style(name, StyleXml::Text(xml.to_string()), None)
    }

    fn add_style(mut self, name: &str, xml: StyleXml, tile_dir: Option<PathBuf>) -> Self {
        self.styles.push(Style {
            name: name.to_string(),
            xml,
            tile_dir,
        });
        self
    }

    /// `num_threads`. Default 1.
    pub fn num_threads(mut self, threads: usize) -> Self {
        self.num_threads = threads;
        self
    }

    /// Listen on this Unix socket. The default: `<work dir>/renderd.sock`.
    pub fn unix_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.listen = Listen::Unix(Some(path.into()));
        self
    }

    /// Listen on TCP `host:port` instead of a Unix socket; port 0 takes a
    /// free port (bound, then released for renderd).
    pub fn tcp(mut self, host: &str, port: u16) -> Self {
        self.listen = Listen::Tcp {
            host: host.to_string(),
            port,
        };
        self
    }

    /// Mapnik's input plugins (`mapnik_sys::DEFAULT_PLUGIN_DIR` for styles
    /// that read data). Default: the work directory, which holds none; a
    /// map without layers needs none.
    pub fn plugins_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugins_dir = Some(dir.into());
        self
    }

    /// `font_dir` and `font_dir_recurse`. Default
    /// `/usr/share/fonts/truetype`, not recursive.
    pub fn font_dir(mut self, dir: impl Into<PathBuf>, recurse: bool) -> Self {
        self.font_dir = dir.into();
        self.font_dir_recurse = recurse;
        self
    }

    /// How long renderd may take to accept connections. Default 60 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts renderd when it is installed, panicking when it then fails;
    /// `None` after printing `skipped: renderd is not installed (...)`
    /// when it is not.
    pub fn start_or_skip(self) -> Option<Renderd> {
        if find_in_path(&self.program).is_none() {
            eprintln!("skipped: {}", not_installed(&self.program));
            return None;
        }
        Some(self.start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Writes renderd.conf, spawns renderd and waits until it accepts
    /// connections. The error says when renderd is not installed, and
    /// holds its log when it exited or did not listen in time.
    pub fn start(self) -> Result<Renderd, String> {
        let program = find_in_path(&self.program).ok_or_else(|| not_installed(&self.program))?;
        let (temp, dir) = match &self.dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let tile_dir = self.tile_dir.clone().unwrap_or_else(|| dir.join("tiles"));
        create_dir(&dir)?;
        create_dir(&tile_dir)?;
        let endpoint = match &self.listen {
            Listen::Unix(socket) => {
                Endpoint::Unix(socket.clone().unwrap_or_else(|| dir.join("renderd.sock")))
            }
            Listen::Tcp { host, port: 0 } => Endpoint::Tcp {
                host: host.clone(),
                port: free_port(host)?,
            },
            Listen::Tcp { host, port } => Endpoint::Tcp {
                host: host.clone(),
                port: *port,
            },
        };
        let conf = self.conf(&dir, &tile_dir, &endpoint)?;
        let conf_path = dir.join("renderd.conf");
        write(&conf_path, &conf)?;
        let log_path = dir.join("renderd.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log_too = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(&program)
            .arg("-f")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log_too)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let mut renderd = Renderd {
            child,
            dir,
            tile_dir,
            endpoint,
            _temp: temp,
        };
        renderd.wait_until_listening(self.timeout)?;
        Ok(renderd)
    }

    /// renderd.conf's text; style XML given as text is written here.
    fn conf(&self, dir: &Path, tile_dir: &Path, endpoint: &Endpoint) -> Result<String, String> {
        let listen = match endpoint {
            Endpoint::Unix(socket) => format!("socketname={}\n", socket.display()),
            Endpoint::Tcp { host, port } => format!("iphostname={host}\nipport={port}\n"),
        };
        let plugins = self.plugins_dir.as_deref().unwrap_or(dir);
        let mut conf = format!(
            "[renderd]\n{listen}num_threads={threads}\ntile_dir={tiles}\n\
             stats_file={dir}/renderd.stats\npid_file={dir}/renderd.pid\n\n\
             [mapnik]\nplugins_dir={plugins}\nfont_dir={fonts}\nfont_dir_recurse={recurse}\n",
            threads = self.num_threads,
            tiles = tile_dir.display(),
            dir = dir.display(),
            plugins = plugins.display(),
            fonts = self.font_dir.display(),
            recurse = self.font_dir_recurse,
        );
        for style in &self.styles {
            let xml = match &style.xml {
                StyleXml::File(path) => path.clone(),
                StyleXml::Text(text) => {
                    let path = dir.join(format!("{}.xml", style.name));
                    write(&path, text)?;
                    path
                }
            };
            let tiles = style.tile_dir.as_deref().unwrap_or(tile_dir);
            if let Some(own) = &style.tile_dir {
                create_dir(own)?;
            }
            conf += &format!(
                "\n[{name}]\nURI=/{name}/\nXML={xml}\nTILEDIR={tiles}\n",
                name = style.name,
                xml = xml.display(),
                tiles = tiles.display(),
            );
        }
        Ok(conf)
    }
}

fn not_installed(program: &Path) -> String {
    format!(
        "{} is not installed (apt-get install renderd)",
        program.display()
    )
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn free_port(host: &str) -> Result<u16, String> {
    std::net::TcpListener::bind((host, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("a free port on {host}: {e}"))
}

/// A running renderd; killed and reaped on drop, its temporary work
/// directory (if it has one) removed after.
pub struct Renderd {
    child: Child,
    dir: PathBuf,
    tile_dir: PathBuf,
    endpoint: Endpoint,
    _temp: Option<tempfile::TempDir>,
}

impl Renderd {
    /// A builder with the defaults: program `renderd`, a temporary work
    /// directory, tiles in `<work dir>/tiles`, one thread, a Unix socket
    /// `<work dir>/renderd.sock`, fonts from `/usr/share/fonts/truetype`
    /// (not recursive), 60 s to start, no style.
    pub fn builder() -> RenderdBuilder {
        RenderdBuilder {
            program: PathBuf::from("renderd"),
            dir: None,
            tile_dir: None,
            styles: Vec::new(),
            num_threads: 1,
            listen: Listen::Unix(None),
            plugins_dir: None,
            font_dir: PathBuf::from("/usr/share/fonts/truetype"),
            font_dir_recurse: false,
            timeout: Duration::from_secs(60),
        }
    }

    fn wait_until_listening(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let connected = match &self.endpoint {
                Endpoint::Unix(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
                Endpoint::Tcp { host, port } => {
                    std::net::TcpStream::connect((host.as_str(), *port)).is_ok()
                }
            };
            if connected {
                return Ok(());
            }
            let exited = self.child.try_wait().map_err(|e| format!("renderd: {e}"))?;
            if let Some(status) = exited {
                return Err(format!("renderd exited ({status}):\n{}", self.log()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "renderd does not listen after {timeout:?}:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where it listens.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// Its Unix socket, when it listens on one.
    pub fn socket(&self) -> Option<&Path> {
        match &self.endpoint {
            Endpoint::Unix(path) => Some(path),
            Endpoint::Tcp { .. } => None,
        }
    }

    /// Its TCP host and port, when it listens on TCP.
    pub fn tcp_addr(&self) -> Option<(&str, u16)> {
        match &self.endpoint {
            Endpoint::Tcp { host, port } => Some((host, *port)),
            Endpoint::Unix(_) => None,
        }
    }

    /// The work directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// renderd's `tile_dir`.
    pub fn tile_dir(&self) -> &Path {
        &self.tile_dir
    }

    /// renderd.conf.
    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("renderd.conf")
    }

    /// What renderd has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("renderd.log")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Renderd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_for_a_unix_socket_and_a_file_style() {
        let builder = Renderd::builder()
            .style("tilepipe", "/styles/tilepipe.xml")
            .num_threads(2)
            .plugins_dir("/plugins")
            .font_dir("/usr/share/fonts", true);
        let dir = Path::new("/work");
        let endpoint = Endpoint::Unix(dir.join("renderd.sock"));
        assert_eq!(
            builder.conf(dir, &dir.join("tiles"), &endpoint).unwrap(),
            "[renderd]\nsocketname=/work/renderd.sock\nnum_threads=2\ntile_dir=/work/tiles\n\
             stats_file=/work/renderd.stats\npid_file=/work/renderd.pid\n\n\
             [mapnik]\nplugins_dir=/plugins\nfont_dir=/usr/share/fonts\nfont_dir_recurse=true\n\n\
             [tilepipe]\nURI=/tilepipe/\nXML=/styles/tilepipe.xml\nTILEDIR=/work/tiles\n"
        );
    }

    #[test]
    fn conf_for_tcp_and_inline_styles_with_their_own_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own");
        let builder = Renderd::builder()
            .inline_style("plain", "<Map/>")
            .style_with_tile_dir("other", "/other.xml", &own)
            .tcp("127.0.0.1", 7654);
        let endpoint = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 7654,
        };
        let tiles = dir.path().join("tiles");
        let conf = builder.conf(dir.path(), &tiles, &endpoint).unwrap();
        let d = dir.path().display();
        assert_eq!(
            conf,
            format!(
                "[renderd]\niphostname=127.0.0.1\nipport=7654\nnum_threads=1\ntile_dir={d}/tiles\n\
                 stats_file={d}/renderd.stats\npid_file={d}/renderd.pid\n\n\
                 [mapnik]\nplugins_dir={d}\nfont_dir=/usr/share/fonts/truetype\nfont_dir_recurse=false\n\n\
                 [plain]\nURI=/plain/\nXML={d}/plain.xml\nTILEDIR={d}/tiles\n\n\
                 [other]\nURI=/other/\nXML=/other.xml\nTILEDIR={d}/own\n"
            )
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("plain.xml")).unwrap(),
            "<Map/>"
        );
        assert!(own.is_dir());
    }

    #[test]
    fn a_missing_program_is_not_installed() {
        let e = Renderd::builder()
            .program("/nonexistent/renderd")
            .start()
            .err()
            .unwrap();
        assert_eq!(
            e,
            "/nonexistent/renderd is not installed (apt-get install renderd)"
        );
        assert!(Renderd::builder()
            .program("no-such-renderd-binary")
            .start_or_skip()
            .is_none());
    }

    #[test]
    fn an_early_exit_is_reported_with_the_log() {
        // `false` exits at once, whatever the arguments.
        let Some(program) = find_in_path("false") else {
            return;
        };
        let e = Renderd::builder().program(program).start().err().unwrap();
        assert!(e.starts_with("renderd exited ("), "{e}");
    }

    #[test]
    fn starts_on_a_free_port_and_is_killed_on_drop() {
        let Some(renderd) = Renderd::builder()
            .inline_style(
                "plain",
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Map background-color=\"#ffffff\" srs=\"+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 +units=m +nadgrids=@null +wktext +no_defs\"/>\n",
            )
            .tcp("127.0.0.1", 0)
            .start_or_skip()
        else {
            return;
        };
        let (host, port) = renderd.tcp_addr().unwrap();
        assert_eq!(host, "127.0.0.1");
        assert!(std::net::TcpStream::connect((host, port)).is_ok());
        assert!(renderd.socket().is_none());
        assert!(renderd.conf_path().is_file());
        assert!(renderd.tile_dir().is_dir());
        assert!(renderd.pid() > 0);
        let dir = renderd.dir().to_path_buf();
        drop(renderd);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        assert!(!dir.exists());
    }
}
