//! Debian's Varnish (`varnishd`, with varnish-modules for vmod_xkey) as a
//! child process on 127.0.0.1: its own port and its own `-n` working
//! directory, killed on drop, for the multi-node tests.

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs varnishd.
const VARNISHD: &str = "/usr/sbin/varnishd";

/// Whether varnishd and vmod_xkey are installed (`scripts/install-deps`).
pub fn available() -> bool {
    std::path::Path::new(VARNISHD).is_file()
        && std::path::Path::new("/usr/lib/x86_64-linux-gnu/varnish/vmods/libvmod_xkey.so").is_file()
}

/// A running varnishd; killed on drop.
pub struct Varnish {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Varnish {
    /// Starts varnishd with `vcl` on `port` of 127.0.0.1 and waits until
    /// it answers. Jail `none`, so it runs the same as root or not and
    /// needs no `varnish` account to reach its temporary directory.
    pub fn start(vcl: &str, port: u16) -> Result<Varnish> {
        let dir = tempfile::Builder::new()
            .prefix("tilepipe-varnish-")
            .tempdir()?;
        let vcl_path = dir.path().join("tilepipe.vcl");
        std::fs::write(&vcl_path, vcl)?;
        let log = std::fs::File::create(dir.path().join("varnishd.log"))?;
        let mut command = Command::new(VARNISHD);
        command
            .arg("-F")
            .arg("-n")
            .arg(dir.path().join("work"))
            .args(["-a", &format!("127.0.0.1:{port}")])
            .arg("-f")
            .arg(&vcl_path)
            .args(["-s", "malloc,32m", "-T", "127.0.0.1:0", "-j", "none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; no varnishd outlives the
        // test thread that started it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().context("cannot start varnishd")?;
        let mut varnish = Varnish { port, dir, child };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = varnish.child.try_wait()? {
                bail!("varnishd exited: {status}\n{}", varnish.log_text());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "varnishd did not listen within 30 s\n{}",
                    varnish.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(varnish)
    }

    /// What varnishd logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("varnishd.log")
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
