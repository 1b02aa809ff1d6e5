//! The tile cache's disk: how full the filesystem under a tile directory
//! is (statvfs, the figures `df` prints), for `/metrics` and the alert
//! rules in `deploy/prometheus/`; and the cache size limits
//! (`render.max_cache_gb`, `render.cache_high_water_percent`), enforced by
//! deleting the least recently used metatiles.
//!
//! OSMF's tile servers run a cron job for this (chef cookbook `tile`,
//! `expire-tiles`/`cleanup-tiles`: above 88 % full, delete metatiles by
//! access time until 80 %). [`sweep`] does the same from inside the
//! process: it walks every style's directory, orders the `.meta` files by
//! when they were last used, and deletes from the oldest until every limit
//! holds. "Last used" is the later of atime and mtime: where the
//! filesystem records reads (`relatime`, Linux's default, updates atime at
//! least daily) atime tells, and where it does not (`noatime`) atime stays
//! at the file's creation and mtime, the last render, decides. Files
//! written in the last minute, and every file that is not a finished
//! metatile (the renderer's `….tmp` files being written, the
//! `planet-import-complete` markers), are never deleted.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The low water mark when only the high one is configured, per cent (as
/// at OSMF).
pub const DEFAULT_LOW_WATER_PERCENT: f64 = 80.0;

/// Above `max_cache_gb`, the cache is brought down to this share of it, so
/// that the next sweeps find room and have nothing to do for a while.
const MAX_CACHE_TARGET: f64 = 0.9;

/// Metatiles written this recently are left alone: a render may be
/// renaming it into place or a client may be waiting for it.
const RECENT_WRITE: Duration = Duration::from_secs(60);

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

/// The limits a sweep enforces, from `render:`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheLimits {
    /// `max_cache_gb` in bytes.
    pub max_bytes: Option<u64>,
    /// `cache_high_water_percent` and `cache_low_water_percent` as
    /// shares, 0 to 1.
    pub water_marks: Option<(f64, f64)>,
    /// Time between sweeps.
    pub interval: Duration,
}

impl CacheLimits {
    /// The configured limits; `None` when there are none (nothing to run).
    pub fn from_config(config: &super::config::RenderConfig) -> Option<CacheLimits> {
        let max_bytes = config.max_cache_gb.map(|gb| (gb * 1e9) as u64);
        let water_marks = config.cache_high_water_percent.map(|high| {
            let low = config
                .cache_low_water_percent
                .unwrap_or(DEFAULT_LOW_WATER_PERCENT);
            (high / 100.0, low / 100.0)
        });
        (max_bytes.is_some() || water_marks.is_some()).then_some(CacheLimits {
            max_bytes,
            water_marks,
            interval: Duration::from_secs(config.cache_check_interval_secs.max(1)),
        })
    }
}

/// What one sweep found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Metatiles in the cache after the sweep.
    pub metatiles: u64,
    /// Their size on disk after the sweep, bytes.
    pub bytes: u64,
    /// Metatiles deleted by this sweep.
    pub evicted: u64,
    /// Disk space they took, bytes.
    pub evicted_bytes: u64,
}

/// One metatile file as the sweep saw it.
struct Entry {
    path: PathBuf,
    /// Disk use (allocated blocks), what `df` and `du` count.
    bytes: u64,
    /// The later of atime and mtime.
    last_used: SystemTime,
    modified: SystemTime,
    /// The filesystem it is on (`st_dev`).
    device: u64,
}

fn file_time(seconds: i64, nanos: i64) -> SystemTime {
    let since_epoch = Duration::new(seconds.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
    SystemTime::UNIX_EPOCH + since_epoch
}

/// Every finished metatile under `dir` with what eviction needs to know
/// of it (see [`crate::metatile::finished_metatile_files`]).
fn scan(dir: &Path, entries: &mut Vec<Entry>) {
    for item in crate::metatile::finished_metatile_files(dir) {
        let Ok(meta) = item.metadata() else { continue };
        let modified = file_time(meta.mtime(), meta.mtime_nsec());
        let accessed = file_time(meta.atime(), meta.atime_nsec());
        entries.push(Entry {
            path: item.path(),
            bytes: meta.blocks() * 512,
            last_used: accessed.max(modified),
            modified,
            device: meta.dev(),
        });
    }
}

/// One pass over the style directories `dirs` (`<tile_dir>/<style>`):
/// deletes the least recently used metatiles until the cache is within
/// `max_bytes` (down to 90 % of it) and every filesystem holding one of
/// the directories is below the high water mark (down to the low one).
/// `now` decides which files count as just written.
pub fn sweep(limits: &CacheLimits, dirs: &[PathBuf], now: SystemTime) -> SweepReport {
    let mut entries = Vec::new();
    let mut dirs = dirs.to_vec();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        scan(dir, &mut entries);
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut report = SweepReport {
        metatiles: entries.len() as u64,
        bytes: total,
        ..SweepReport::default()
    };
    // Bytes to free over the whole cache, and per filesystem.
    let to_free = limits
        .max_bytes
        .filter(|&max| total > max)
        .map_or(0, |max| total - (max as f64 * MAX_CACHE_TARGET) as u64);
    let mut to_free_on: HashMap<u64, u64> = HashMap::new();
    if let Some((high, low)) = limits.water_marks {
        for dir in &dirs {
            let (Ok(meta), Ok(usage)) = (std::fs::metadata(dir), FilesystemUsage::of(dir)) else {
                continue;
            };
            if usage.used_ratio() > high {
                let usable = usage.used_bytes + usage.avail_bytes;
                let excess = usage
                    .used_bytes
                    .saturating_sub((usable as f64 * low) as u64);
                to_free_on.insert(meta.dev(), excess);
            }
        }
    }
    if to_free == 0 && to_free_on.values().all(|&b| b == 0) {
        return report;
    }
    entries.sort_by_key(|e| e.last_used);
    let mut freed = 0u64;
    let mut freed_on: HashMap<u64, u64> = HashMap::new();
    let freed_on_device =
        |freed_on: &HashMap<u64, u64>, device: &u64| freed_on.get(device).copied().unwrap_or(0);
    for entry in entries {
        let cache_done = freed >= to_free;
        let devices_done = to_free_on
            .iter()
            .all(|(device, need)| freed_on_device(&freed_on, device) >= *need);
        if cache_done && devices_done {
            break;
        }
        let needed_here = to_free_on
            .get(&entry.device)
            .is_some_and(|need| freed_on_device(&freed_on, &entry.device) < *need);
        if cache_done && !needed_here {
            continue;
        }
        if now.duration_since(entry.modified).unwrap_or_default() < RECENT_WRITE {
            continue;
        }
        // Re-rendered since the scan: it is in use, and the file there
        // now is another one.
        match std::fs::metadata(&entry.path) {
            Ok(meta) if file_time(meta.mtime(), meta.mtime_nsec()) == entry.modified => {}
            _ => continue,
        }
        match std::fs::remove_file(&entry.path) {
            Ok(()) => {
                freed += entry.bytes;
                *freed_on.entry(entry.device).or_default() += entry.bytes;
                report.evicted += 1;
                report.evicted_bytes += entry.bytes;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "tile cache limit: cannot delete {}: {e}",
                entry.path.display()
            ),
        }
    }
    report.metatiles -= report.evicted;
    report.bytes -= report.evicted_bytes;
    report
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
