//! The tile cache's disk: how full the filesystem under a tile directory
//! is (statvfs, the figures `df` prints), for `/metrics` and the alert
//! rules in `deploy/prometheus/`.

use std::path::Path;

/// A filesystem's size and free space, as `df` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesystemUsage {
    /// Total size, bytes.
    pub size_bytes: u64,
    /// Space an unprivileged process may still use, bytes (`df`'s
    /// "Avail"; the blocks reserved for root are not in it).
    pub avail_bytes: u64,
    /// Bytes in use (`df`'s "Used": size minus all free blocks).
    pub used_bytes: u64,
}

impl FilesystemUsage {
    /// The filesystem holding `path` (which must exist).
    pub fn of(path: &Path) -> std::io::Result<FilesystemUsage> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c_path` is a NUL-terminated string that outlives the
        // call, and `stats` points at writable memory of the struct's size,
        // which statvfs(3) fills entirely when it returns 0.
        let result = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it initialised `stats`.
        let stats = unsafe { stats.assume_init() };
        // All u64 on 64-bit Linux, the only target (Debian 12 amd64).
        let fragment: u64 = stats.f_frsize;
        let blocks: u64 = stats.f_blocks;
        let free: u64 = stats.f_bfree;
        let avail: u64 = stats.f_bavail;
        Ok(FilesystemUsage {
            size_bytes: blocks * fragment,
            avail_bytes: avail * fragment,
            used_bytes: blocks.saturating_sub(free) * fragment,
        })
    }

    /// How full it is, 0 to 1, as `df`'s "Use%" counts: used over used
    /// plus available (the root reserve counts as neither), which is the
    /// figure OSMF's tile cache clean-up compares with its 88 % mark.
    pub fn used_ratio(&self) -> f64 {
        let usable = self.used_bytes + self.avail_bytes;
        if usable == 0 {
            0.0
        } else {
            self.used_bytes as f64 / usable as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_the_temporary_directory_is_plausible() {
        let usage = FilesystemUsage::of(&std::env::temp_dir()).unwrap();
        assert!(usage.size_bytes > 0);
        assert!(usage.avail_bytes <= usage.size_bytes);
        assert!(usage.used_bytes <= usage.size_bytes);
        let ratio = usage.used_ratio();
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
        assert!(FilesystemUsage::of(Path::new("/no/such/directory")).is_err());
    }
}
