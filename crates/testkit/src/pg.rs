//! Private, throwaway PostgreSQL 15 + PostGIS clusters.
//!
//! Tests and the demo never touch a server installed by hand: each
//! [`PgCluster`] runs `initdb` into its own directory, listens on a free port
//! of 127.0.0.1 (and on a unix socket inside that directory) and holds a
//! template database with PostGIS and hstore, from which
//! [`PgCluster::create_database`] copies a fresh database per test.
//!
//! Cluster directory layout: `data/` (PGDATA), `socket/` (unix socket),
//! `postgres.log` (server output).
//!
//! No orphaned server may outlive a test process, even one that exits
//! without running destructors (Rust never drops statics, and a test binary
//! may be killed). So every owned postmaster is spawned by one dedicated
//! thread that never exits, with `PR_SET_PDEATHSIG = SIGQUIT`: the kernel
//! sends the signal when the spawning *thread* dies, which for a thread that
//! never exits means when the process dies, however it dies. SIGQUIT is
//! PostgreSQL's immediate shutdown.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Database the clusters copy new databases from; it has PostGIS and hstore.
pub const TEMPLATE_DATABASE: &str = "tilepipe_template";

const DATA_DIR: &str = "data";
const SOCKET_DIR: &str = "socket";
const LOG_FILE: &str = "postgres.log";
/// Our settings live in their own file, included from `postgresql.conf`, so
/// they can be rewritten (e.g. a new port) without editing initdb's file.
const SETTINGS_FILE: &str = "tilepipe-testkit.conf";
const SUPERUSER: &str = "postgres";

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the cluster directory is removed when the cluster is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cleanup {
    RemoveDir,
    KeepDir,
}

/// Whether the server dies with this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifetime {
    /// Spawned with a parent-death signal; stopped (immediate mode) on drop.
    Owned,
    /// Started in its own session without a parent-death signal, for the
    /// command line's `pg start`; dropping the handle leaves it running.
    Detached,
}

/// A private PostgreSQL cluster. See the module documentation.
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    bindir: PathBuf,
    port: u16,
    /// `(uid, gid)` to run initdb and the server as, when we are root.
    run_as: Option<(u32, u32)>,
    cleanup: Cleanup,
    lifetime: Lifetime,
    postmaster: Mutex<Option<Child>>,
    next_database: AtomicU64,
}

impl PgCluster {
    /// Starts a new cluster in a fresh temporary directory (removed on drop),
    /// or in `dir`, which is kept on drop; an existing cluster in `dir` is
    /// started again rather than re-initialised.
    pub fn start(dir: Option<&Path>) -> Result<PgCluster> {
        let (root, cleanup) = match dir {
            Some(dir) => (absolute(dir)?, Cleanup::KeepDir),
            None => (new_temporary_cluster_dir()?, Cleanup::RemoveDir),
        };
        Self::start_in(root, cleanup, Lifetime::Owned)
    }

    /// Starts (initialising if needed) a cluster in `dir` that keeps running
    /// after this process exits. Returns immediately if it already runs.
    pub fn start_detached(dir: &Path) -> Result<PgCluster> {
        let root = absolute(dir)?;
        if root.join(DATA_DIR).join("PG_VERSION").exists() {
            let cluster = Self::attach(&root)?;
            if cluster.running_pid().is_some() {
                return Ok(cluster);
            }
        }
        Self::start_in(root, Cleanup::KeepDir, Lifetime::Detached)
    }

    /// A handle on an existing cluster directory (running or not), e.g. one
    /// made by [`PgCluster::start_detached`] in another process. Dropping it
    /// neither stops the server nor removes anything.
    pub fn attach(dir: &Path) -> Result<PgCluster> {
        let root = absolute(dir)?;
        let settings = root.join(DATA_DIR).join(SETTINGS_FILE);
        let text = fs::read_to_string(&settings).with_context(|| {
            format!(
                "{} is not a tilepipe-testkit cluster directory (cannot read {})",
                root.display(),
                settings.display()
            )
        })?;
        let port = parse_port_setting(&text)
            .ok_or_else(|| anyhow!("no `port = N` line in {}", settings.display()))?;
        Ok(PgCluster {
            root,
            bindir: find_bindir()?,
            port,
            run_as: server_account()?,
            cleanup: Cleanup::KeepDir,
            lifetime: Lifetime::Detached,
            postmaster: Mutex::new(None),
            next_database: AtomicU64::new(0),
        })
    }

    /// One cluster per test process, started on first use. Its server dies
    /// with the process (parent-death signal); its directory is removed by
    /// an `atexit` hook, or, if the process was killed, by the next cluster
    /// start in any process.
    ///
    /// Do not stop or restart the shared cluster: other tests use it at the
    /// same time. Fault tests start their own with [`PgCluster::start`].
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = PgCluster::start(None)
                .unwrap_or_else(|e| panic!("cannot start the shared PostgreSQL cluster: {e:#}"));
            register_exit_cleanup(&SHARED);
            cluster
        })
    }

    fn start_in(root: PathBuf, cleanup: Cleanup, lifetime: Lifetime) -> Result<PgCluster> {
        let bindir = find_bindir()?;
        let run_as = server_account()?;
        fs::create_dir_all(&root)
            .with_context(|| format!("cannot create cluster directory {}", root.display()))?;
        let mut cluster = PgCluster {
            root,
            bindir,
            port: 0,
            run_as,
            cleanup,
            lifetime,
            postmaster: Mutex::new(None),
            next_database: AtomicU64::new(0),
        };
        // From here on, an error drops `cluster`, which stops whatever was
        // started and removes a temporary directory.
        let fresh = !cluster.data_dir().join("PG_VERSION").exists();
        if fresh {
            cluster.initdb()?;
        } else {
            let settings = fs::read_to_string(cluster.data_dir().join(SETTINGS_FILE))
                .context("existing data directory has no tilepipe-testkit settings")?;
            cluster.port = parse_port_setting(&settings).unwrap_or(0);
        }
        cluster.launch_on_free_port()?;
        cluster.ensure_template()?;
        Ok(cluster)
    }

    /// libpq URL of database `dbname` on this cluster (TCP on 127.0.0.1).
    pub fn url(&self, dbname: &str) -> String {
        format!("postgresql://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The TCP port on 127.0.0.1 (also the unix socket's suffix).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join(SOCKET_DIR)
    }

    /// The cluster directory (PGDATA is its `data/`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// PGDATA: `<dir>/data`.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join(DATA_DIR)
    }

    /// The server's output: `<dir>/postgres.log`.
    pub fn log_file(&self) -> PathBuf {
        self.root.join(LOG_FILE)
    }

    /// Process id of the running postmaster, if any.
    pub fn pid(&self) -> Option<u32> {
        self.running_pid().map(|p| p as u32)
    }

    /// Creates a new, empty database with PostGIS and hstore (a copy of the
    /// template, which takes well under a second) and returns its URL. The
    /// name is `name_hint` made safe and unique.
    pub fn create_database(&self, name_hint: &str) -> Result<String> {
        let name = format!(
            "{}_{}_{}",
            sanitize_identifier(name_hint),
            std::process::id(),
            self.next_database.fetch_add(1, Ordering::Relaxed)
        );
        let mut client = self.connect("postgres")?;
        // Creating from a template only fails if someone is connected to
        // the template; connections to it are disabled, so no retry needed.
        client
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE {TEMPLATE_DATABASE}"
            ))
            .with_context(|| format!("CREATE DATABASE {name} failed"))?;
        Ok(self.url(&name))
    }

    /// Creates database `name` from the template unless it exists, and
    /// returns its URL. For fixed names (the demo's database); tests use
    /// [`PgCluster::create_database`].
    pub fn ensure_database(&self, name: &str) -> Result<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database name {name:?} must be letters, digits and underscores");
        }
        let mut client = self.connect("postgres")?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!(
                    "CREATE DATABASE \"{name}\" TEMPLATE {TEMPLATE_DATABASE}"
                ))
                .with_context(|| format!("CREATE DATABASE {name} failed"))?;
        }
        Ok(self.url(name))
    }

    /// Drops a database made by [`PgCluster::create_database`], closing any
    /// sessions still connected to it.
    pub fn drop_database(&self, name: &str) -> Result<()> {
        let mut client = self.connect("postgres")?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                name.replace('"', "\"\"")
            ))
            .with_context(|| format!("DROP DATABASE {name} failed"))
    }

    /// A superuser connection over the cluster's unix socket (which cannot
    /// reach any other server, unlike a TCP port someone else might hold).
    pub fn connect(&self, dbname: &str) -> Result<postgres::Client> {
        postgres::Config::new()
            .host_path(self.socket_dir())
            .port(self.port)
            .user(SUPERUSER)
            .dbname(dbname)
            .connect(postgres::NoTls)
            .with_context(|| {
                format!(
                    "cannot connect to database {dbname} of the cluster in {}",
                    self.root.display()
                )
            })
    }

    /// A hot standby of this cluster, streaming from it: `pg_basebackup -R`
    /// (which writes `standby.signal` and `primary_conninfo`) into a new
    /// temporary cluster directory, started on its own port and socket.
    /// Read-only; it follows every commit of this cluster until dropped.
    /// The primary's `pg_hba.conf` gets a replication entry if it has none
    /// (initdb's default has them).
    pub fn start_standby(&self) -> Result<PgCluster> {
        self.allow_replication()?;
        let root = new_temporary_cluster_dir()?;
        let mut standby = PgCluster {
            root,
            bindir: self.bindir.clone(),
            port: 0,
            run_as: self.run_as,
            cleanup: Cleanup::RemoveDir,
            lifetime: Lifetime::Owned,
            postmaster: Mutex::new(None),
            next_database: AtomicU64::new(0),
        };
        fs::create_dir_all(standby.socket_dir())?;
        standby.hand_over_to_server_account(&standby.root)?;
        // A fast checkpoint: the default spread one waits for
        // checkpoint_timeout's share (pg_basebackup docs, `-c`).
        let output = self
            .command("pg_basebackup")?
            .arg("-D")
            .arg(standby.data_dir())
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER])
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .output()
            .context("cannot run pg_basebackup")?;
        if !output.status.success() {
            bail!(
                "pg_basebackup failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // The copied settings name the primary's port and socket: new ones.
        standby.launch_on_free_port()?;
        Ok(standby)
    }

    /// Adds `local replication all trust` to `pg_hba.conf` unless some
    /// line allows replication, and reloads.
    fn allow_replication(&self) -> Result<()> {
        let hba = self.data_dir().join("pg_hba.conf");
        let text =
            fs::read_to_string(&hba).with_context(|| format!("cannot read {}", hba.display()))?;
        let allowed = text.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            !line.trim_start().starts_with('#') && fields.get(1) == Some(&"replication")
        });
        if !allowed {
            fs::OpenOptions::new().append(true).open(&hba)?.write_all(
                b"local replication all trust\nhost replication all 127.0.0.1/32 trust\n",
            )?;
            self.connect("postgres")?
                .batch_execute("SELECT pg_reload_conf()")?;
        }
        Ok(())
    }

    /// Fast shutdown: clients are disconnected, data is kept. Waits until
    /// the server has exited.
    pub fn stop(&self) -> Result<()> {
        self.signal_and_wait(libc::SIGINT, "fast")
    }

    /// Starts the server again after [`PgCluster::stop`], on the same port
    /// and with the same data.
    pub fn start_again(&self) -> Result<()> {
        if let Some(pid) = self.running_pid() {
            bail!(
                "the cluster in {} already runs (pid {pid})",
                self.root.display()
            );
        }
        self.launch()
    }

    /// [`PgCluster::stop`] then [`PgCluster::start_again`].
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    fn initdb(&mut self) -> Result<()> {
        let data = self.data_dir();
        fs::create_dir_all(self.socket_dir())?;
        self.hand_over_to_server_account(&self.root)?;
        let output = self
            .command("initdb")?
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", SUPERUSER, "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .output()
            .context("cannot run initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(conf, "\ninclude_if_exists = '{SETTINGS_FILE}'")?;
        Ok(())
    }

    fn write_settings(&self) -> Result<()> {
        let socket = self.socket_dir();
        let socket = socket.to_str().context("socket directory is not UTF-8")?;
        // Unix socket paths are limited to 107 bytes; say so rather than let
        // the server fail with a less obvious message.
        if socket.len() + ".s.PGSQL.65535".len() + 1 > 107 {
            bail!("cluster directory path is too long for a unix socket: {socket}");
        }
        let text = format!(
            "# Written by tilepipe-testkit: a throwaway test cluster.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             # Durability is worthless in a throwaway cluster; speed is not.\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_wal_size = '1GB'\n\
             # Streaming standbys (`start_standby`); PostgreSQL 15's defaults.\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             hot_standby = on\n\
             logging_collector = off\n\
             timezone = 'UTC'\n",
            port = self.port
        );
        let path = self.data_dir().join(SETTINGS_FILE);
        fs::write(&path, text)?;
        self.hand_over_to_server_account(&path)
    }

    /// Picks a free port (unless one is configured already) and starts the
    /// server, trying another port if ours was taken in between.
    fn launch_on_free_port(&mut self) -> Result<()> {
        let keep_configured_port = self.port != 0;
        let mut attempts = 0;
        loop {
            attempts += 1;
            if !keep_configured_port {
                self.port = free_port()?;
            }
            self.write_settings()?;
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(e)
                    if !keep_configured_port
                        && attempts < 5
                        && self.log_tail(20).contains("Address already in use") =>
                {
                    tracing::debug!("port {} was taken, retrying: {e:#}", self.port);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Spawns the postmaster and waits until it accepts connections.
    fn launch(&self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .context("cannot open the server log")?;
        let log_offset = log.metadata()?.len();
        let mut command = self.command("postgres")?;
        command
            .arg("-D")
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = match self.lifetime {
            Lifetime::Owned => spawn_tied_to_process(command),
            Lifetime::Detached => {
                // SAFETY: setsid is async-signal-safe and touches no memory.
                unsafe {
                    command.pre_exec(|| {
                        if libc::setsid() < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                command.spawn()
            }
        }
        .context("cannot spawn the postgres server")?;
        let mut postmaster = self.lock_postmaster();
        *postmaster = Some(child);
        let started = Instant::now();
        loop {
            if let Some(status) = postmaster
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                *postmaster = None;
                bail!(
                    "the postgres server exited during startup ({status}); log:\n{}",
                    self.log_since(log_offset)
                );
            }
            if self.connect("postgres").is_ok() {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "the postgres server did not accept connections within {:?}; log:\n{}",
                    READY_TIMEOUT,
                    self.log_since(log_offset)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        if self.lifetime == Lifetime::Detached {
            // It outlives us; its new parent reaps it.
            *postmaster = None;
        }
        Ok(())
    }

    fn ensure_template(&self) -> Result<()> {
        let mut admin = self.connect("postgres")?;
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&TEMPLATE_DATABASE],
            )?
            .is_some();
        if exists {
            return Ok(());
        }
        admin.batch_execute(&format!("CREATE DATABASE {TEMPLATE_DATABASE}"))?;
        {
            let mut template = self.connect(TEMPLATE_DATABASE)?;
            template
                .batch_execute("CREATE EXTENSION postgis; CREATE EXTENSION hstore;")
                .context(
                    "cannot create the postgis and hstore extensions \
                     (is the postgresql-15-postgis-3 package installed?)",
                )?;
        }
        // A session left on the template would make CREATE DATABASE fail.
        admin.batch_execute(&format!(
            "ALTER DATABASE {TEMPLATE_DATABASE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
        ))?;
        Ok(())
    }

    /// Stops the server with `signal` and waits for it to exit, escalating
    /// to an immediate shutdown and then SIGKILL if it takes too long.
    fn signal_and_wait(&self, signal: libc::c_int, mode: &str) -> Result<()> {
        let mut postmaster = self.lock_postmaster();
        if let Some(mut child) = postmaster.take() {
            let pid = child.id() as libc::pid_t;
            send_signal(pid, signal);
            let mut deadline = Instant::now() + STOP_TIMEOUT;
            let mut escalated = false;
            loop {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    if escalated {
                        child.kill()?;
                        child.wait()?;
                        bail!("the postgres server ignored a {mode} shutdown and was killed");
                    }
                    send_signal(pid, libc::SIGQUIT);
                    escalated = true;
                    deadline = Instant::now() + STOP_TIMEOUT;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        drop(postmaster);
        // Not our child (a detached or attached cluster): go by the pid file.
        let Some(pid) = self.running_pid() else {
            return Ok(());
        };
        send_signal(pid, signal);
        let deadline = Instant::now() + STOP_TIMEOUT * 2;
        while process_alive(pid) {
            if Instant::now() > deadline {
                bail!(
                    "the postgres server (pid {pid}) did not stop within {:?}",
                    STOP_TIMEOUT * 2
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops an owned server and, for a temporary cluster, removes its
    /// directory. Used by drop and by the exit hook of the shared cluster.
    /// A temporary cluster's data is about to vanish, so an immediate
    /// shutdown; a kept one gets a fast shutdown, since an immediate one
    /// would lose the last asynchronous commits (`synchronous_commit=off`).
    fn teardown(&self) {
        if self.lifetime == Lifetime::Owned {
            let (signal, mode) = match self.cleanup {
                Cleanup::RemoveDir => (libc::SIGQUIT, "immediate"),
                Cleanup::KeepDir => (libc::SIGINT, "fast"),
            };
            if let Err(e) = self.signal_and_wait(signal, mode) {
                eprintln!("tilepipe-testkit: stopping PostgreSQL failed: {e:#}");
            }
        }
        if self.cleanup == Cleanup::RemoveDir {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn running_pid(&self) -> Option<libc::pid_t> {
        if let Some(child) = self.lock_postmaster().as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                return Some(child.id() as libc::pid_t);
            }
        }
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: libc::pid_t = text.lines().next()?.trim().parse().ok()?;
        process_alive(pid).then_some(pid)
    }

    fn lock_postmaster(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic elsewhere must not keep us from stopping the server.
        self.postmaster.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn command(&self, program: &str) -> Result<Command> {
        let path = self.bindir.join(program);
        if !path.is_file() {
            bail!(
                "PostgreSQL binary {} not found (install postgresql-15 and \
                 postgresql-15-postgis-3, or set TILEPIPE_PG_BINDIR)",
                path.display()
            );
        }
        let mut command = Command::new(path);
        command.env_remove("PGDATA").env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        Ok(command)
    }

    /// Gives `path` (recursively) to the server's account when we are root,
    /// and checks that account can reach it.
    fn hand_over_to_server_account(&self, path: &Path) -> Result<()> {
        let Some((uid, gid)) = self.run_as else {
            return Ok(());
        };
        chown_recursive(path, uid, gid)?;
        for ancestor in path.ancestors().skip(1) {
            let meta = fs::metadata(ancestor)?;
            let traversable = meta.permissions().mode() & 0o001 != 0
                || std::os::unix::fs::MetadataExt::uid(&meta) == uid;
            if !traversable {
                bail!(
                    "the postgres user (uid {uid}) cannot enter {} (the server runs as postgres \
                     because we are root); `chmod o+x` it or choose a cluster \
                     directory outside it",
                    ancestor.display()
                );
            }
        }
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(self.log_file()) {
            let _ = file.seek(SeekFrom::Start(offset));
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Makes the shared cluster's directory disappear at process exit.
///
/// Two mechanisms, because no single one covers every way a process ends:
/// - an `atexit` hook stops the server and removes the directory on any
///   normal exit (returning from `main` or `std::process::exit`, which is
///   how the test harness ends, passing or failing);
/// - a process killed outright runs no hook: its server still dies of the
///   parent-death signal, and the directory, whose name carries the owning
///   process id, is removed by the next cluster start in any process once
///   that id is gone ([`sweep_stale_cluster_dirs`]).
fn register_exit_cleanup(shared: &'static OnceLock<PgCluster>) {
    static SHARED_REF: OnceLock<&'static OnceLock<PgCluster>> = OnceLock::new();
    extern "C" fn at_exit() {
        if let Some(cluster) = SHARED_REF.get().and_then(|s| s.get()) {
            cluster.teardown();
        }
    }
    if SHARED_REF.set(shared).is_ok() {
        // SAFETY: registers a plain function; failure only loses cleanup.
        unsafe {
            libc::atexit(at_exit);
        }
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` from the dedicated spawner thread with a parent-death
/// signal, so the child gets SIGQUIT when this process dies.
fn spawn_tied_to_process(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        // The thread must outlive every child: the kernel sends the
        // parent-death signal when the *thread* that forked exits. The
        // sender sits in a static, so the loop never ends.
        std::thread::Builder::new()
            .name("testkit-pg-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the postgres spawner thread");
        requests
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe; the error is built
    // without allocating. std runs this after setuid, which matters because
    // a uid change clears the parent-death signal.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply, answer) = mpsc::channel();
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the postgres spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the postgres spawner thread is gone"))?
}

/// Finds the PostgreSQL binaries: `$TILEPIPE_PG_BINDIR`, then Debian's
/// PostgreSQL 15 location, then `pg_config --bindir`.
pub fn find_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TILEPIPE_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!("TILEPIPE_PG_BINDIR={} has no initdb binary", dir.display());
        }
        return Ok(dir);
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if debian.join("initdb").is_file() {
        return Ok(debian);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match from_pg_config {
        Some(dir) if dir.join("initdb").is_file() => Ok(dir),
        _ => bail!(
            "PostgreSQL binaries not found: no initdb in $TILEPIPE_PG_BINDIR, \
             /usr/lib/postgresql/15/bin or `pg_config --bindir` \
             (install postgresql-15 and postgresql-15-postgis-3)"
        ),
    }
}

/// initdb refuses to run as root: then run everything as `postgres`.
fn server_account() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new(SUPERUSER).expect("no NUL in a constant");
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy
    // the two integers out at once. Only called during setup, so the
    // non-reentrancy of getpwnam does not matter.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        bail!(
            "running as root, but there is no `postgres` system user to run \
             initdb and the server as (initdb refuses to run as root)"
        );
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", path.display()))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Where temporary clusters live: one directory per user, each cluster in
/// `p<pid>-<random>`, so stale ones can be told apart from live ones.
fn temporary_clusters_base() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("tilepipe-testkit-pg-{euid}"))
}

fn new_temporary_cluster_dir() -> Result<PathBuf> {
    let base = temporary_clusters_base();
    fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    // The postgres account must be able to traverse it when we are root.
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755))?;
    sweep_stale_cluster_dirs(&base);
    let dir = tempfile::Builder::new()
        .prefix(&format!("p{}-", std::process::id()))
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a cluster directory in {}", base.display()))?;
    Ok(dir.keep())
}

/// Removes cluster directories whose creating process is gone and whose
/// server no longer runs (left behind by a killed test process).
fn sweep_stale_cluster_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix('p'))
            .and_then(|n| n.split('-').next())
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if owner as u32 == std::process::id() || process_alive(owner) {
            continue;
        }
        let server_alive = fs::read_to_string(entry.path().join(DATA_DIR).join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            .is_some_and(process_alive);
        if !server_alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn send_signal(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: plain kill(2); a vanished process just yields ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).context("cannot find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

fn parse_port_setting(text: &str) -> Option<u16> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("port"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .filter_map(|value| value.trim().parse().ok())
        .next_back()
}

fn sanitize_identifier(hint: &str) -> String {
    let mut name: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert(0, 'd');
    }
    name
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("bad path {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_made_safe() {
        assert_eq!(sanitize_identifier("My Test-DB"), "my_test_db");
        assert_eq!(sanitize_identifier("1st"), "d1st");
        assert_eq!(sanitize_identifier(""), "d");
        assert_eq!(sanitize_identifier(&"x".repeat(80)).len(), 40);
    }

    #[test]
    fn port_setting_is_read_back() {
        assert_eq!(parse_port_setting("a = 1\nport = 5433\n"), Some(5433));
        assert_eq!(parse_port_setting("port=1\nport = 2\n"), Some(2));
        assert_eq!(parse_port_setting("portal = 3\n"), None);
    }
}
