//! Per-client token buckets (mod_tile's `ModTileEnableTileThrottling`).
//!
//! Every tile request takes a token from the client's `tiles` bucket; a
//! tile that must be rendered also takes one from its `renders` bucket.
//! Buckets start full and get `rate` tokens per second back, up to `size`.
//! A request that finds a bucket empty is answered 429 with a
//! `Retry-After` of the seconds until the token it lacks is back.
//!
//! What mod_tile does differently, and why tilepipe does not:
//! - Refill: mod_tile refills every client from one global clock, and only
//!   when some client finds its bucket empty; the top-up
//!   `(now - last_fillup) / rate` is truncated to a C `int`, which
//!   overflows at high rates after a long quiet spell (buckets go
//!   negative), and a refused missing-tile request has already spent its
//!   tile token and spends another on each of its three rounds. Here each
//!   client's bucket refills continuously from its own last visit, in
//!   floating point, and a refused request spends nothing.
//! - mod_tile hashes addresses into 100 057 slots and a collision resets
//!   the slot to full buckets (two clients can unthrottle each other);
//!   here clients are exact keys (IPv6 by /64, which one subscriber
//!   usually holds whole).
//! - mod_tile sleeps 3 s holding the Apache worker before its 503; here
//!   the answer is immediate.
//!
//! Memory is bounded by `max_clients`: buckets that are full again are
//! equivalent to unknown clients and are dropped first.

use super::config::{Bucket, ThrottleConfig};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Client {
    tiles: f64,
    renders: f64,
    last: Instant,
}

/// What [`Throttle::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Go ahead; the tokens were taken.
    Allowed,
    /// Refused (429); nothing was taken.
    Refused {
        /// Until the missing token is back: the `Retry-After`.
        retry_after: Duration,
    },
}

/// Every client's token buckets, in shards (see the module documentation).
pub struct Throttle {
    tiles: Bucket,
    renders: Bucket,
    max_per_shard: usize,
    shards: Vec<Mutex<HashMap<IpAddr, Client>>>,
}

/// The key a client is tracked by: IPv4 as is (also when mapped into
/// IPv6), IPv6 by its /64 prefix.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn refill(tokens: f64, bucket: Bucket, elapsed: f64) -> f64 {
    (tokens + elapsed * bucket.rate).min(f64::from(bucket.size))
}

fn wait_for_one(tokens: f64, bucket: Bucket) -> Duration {
    if bucket.rate <= 0.0 {
        return Duration::from_secs(3600);
    }
    Duration::from_secs_f64(((1.0 - tokens) / bucket.rate).max(0.0))
}

impl Throttle {
    /// Buckets sized by `settings`; no client is tracked yet, and each
    /// starts with full buckets.
    pub fn new(settings: &ThrottleConfig) -> Throttle {
        Throttle {
            tiles: settings.tiles,
            renders: settings.renders,
            max_per_shard: (settings.max_clients / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &IpAddr) -> &Mutex<HashMap<IpAddr, Client>> {
        let h = match key {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => {
                let s = v6.segments();
                (usize::from(s[2]) << 16 | usize::from(s[3])) ^ usize::from(s[1])
            }
        };
        &self.shards[(h ^ (h >> 7)) % SHARDS]
    }

    /// Takes a tile token (and a render token when `render`) from the
    /// client at `ip`, at time `now`.
    pub fn check_at(&self, ip: IpAddr, render: bool, now: Instant) -> Verdict {
        let key = client_key(ip);
        let mut shard = lock(self.shard(&key));
        if shard.len() >= self.max_per_shard && !shard.contains_key(&key) {
            self.evict(&mut shard, now);
        }
        let client = shard.entry(key).or_insert(Client {
            tiles: f64::from(self.tiles.size),
            renders: f64::from(self.renders.size),
            last: now,
        });
        let elapsed = now.saturating_duration_since(client.last).as_secs_f64();
        client.last = now.max(client.last);
        client.tiles = refill(client.tiles, self.tiles, elapsed);
        client.renders = refill(client.renders, self.renders, elapsed);
        let mut wait = Duration::ZERO;
        if client.tiles < 1.0 {
            wait = wait.max(wait_for_one(client.tiles, self.tiles));
        }
        if render && client.renders < 1.0 {
            wait = wait.max(wait_for_one(client.renders, self.renders));
        }
        if !wait.is_zero() {
            return Verdict::Refused { retry_after: wait };
        }
        client.tiles -= 1.0;
        if render {
            client.renders -= 1.0;
        }
        Verdict::Allowed
    }

    /// [`Throttle::check_at`] now.
    pub fn check(&self, ip: IpAddr, render: bool) -> Verdict {
        self.check_at(ip, render, Instant::now())
    }

    /// Drops clients whose buckets are full again; if that frees nothing,
    /// the least recently seen half.
    fn evict(&self, shard: &mut HashMap<IpAddr, Client>, now: Instant) {
        let (tiles, renders) = (self.tiles, self.renders);
        shard.retain(|_, c| {
            let elapsed = now.saturating_duration_since(c.last).as_secs_f64();
            refill(c.tiles, tiles, elapsed) < f64::from(tiles.size)
                || refill(c.renders, renders, elapsed) < f64::from(renders.size)
        });
        if shard.len() >= self.max_per_shard {
            let mut seen: Vec<Instant> = shard.values().map(|c| c.last).collect();
            seen.sort_unstable();
            let cut = seen[seen.len() / 2];
            shard.retain(|_, c| c.last > cut);
        }
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tiles: (u32, f64), renders: (u32, f64)) -> ThrottleConfig {
        ThrottleConfig {
            enabled: true,
            tiles: Bucket {
                size: tiles.0,
                rate: tiles.1,
            },
            renders: Bucket {
                size: renders.0,
                rate: renders.1,
            },
            ..ThrottleConfig::default()
        }
    }

    #[test]
    fn buckets_drain_and_refill_per_client() {
        let t = Throttle::new(&settings((3, 1.0), (1, 0.5)));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.check_at(a, false, t0), Verdict::Allowed);
        }
        let Verdict::Refused { retry_after } = t.check_at(a, false, t0) else {
            panic!("fourth tile allowed");
        };
        assert!((retry_after.as_secs_f64() - 1.0).abs() < 1e-6);
        // Another client has its own bucket.
        assert_eq!(t.check_at(b, false, t0), Verdict::Allowed);
        // Half a second gives half a token: still refused.
        let half = t0 + Duration::from_millis(500);
        assert!(matches!(
            t.check_at(a, false, half),
            Verdict::Refused { .. }
        ));
        // A refused request spent nothing: one second after t0 one token.
        let one = t0 + Duration::from_millis(1000);
        assert_eq!(t.check_at(a, false, one), Verdict::Allowed);
        assert!(matches!(t.check_at(a, false, one), Verdict::Refused { .. }));
    }

    #[test]
    fn renders_take_both_or_nothing() {
        let t = Throttle::new(&settings((10, 1.0), (1, 0.5)));
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(t.check_at(a, true, t0), Verdict::Allowed);
        let Verdict::Refused { retry_after } = t.check_at(a, true, t0) else {
            panic!("second render allowed");
        };
        assert!((retry_after.as_secs_f64() - 2.0).abs() < 1e-6);
        // The refused render did not cost a tile token: 9 tiles left.
        for _ in 0..9 {
            assert_eq!(t.check_at(a, false, t0), Verdict::Allowed);
        }
        assert!(matches!(t.check_at(a, false, t0), Verdict::Refused { .. }));
        // Same /64: same client.
        let a2: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(matches!(t.check_at(a2, false, t0), Verdict::Refused { .. }));
    }

    #[test]
    fn long_quiet_spells_do_not_overflow() {
        let t = Throttle::new(&settings((5, 1e6), (5, 1e6)));
        let a: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(t.check_at(a, true, t0), Verdict::Allowed);
        let later = t0 + Duration::from_secs(10 * 365 * 86_400);
        for _ in 0..5 {
            assert_eq!(t.check_at(a, true, later), Verdict::Allowed);
        }
        assert!(matches!(
            t.check_at(a, true, later),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = settings((2, 1.0), (1, 1.0));
        s.max_clients = SHARDS * 4;
        let t = Throttle::new(&s);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(t.check_at(ip, false, t0), Verdict::Allowed);
        }
        assert!(t.clients() <= SHARDS * 4, "{}", t.clients());
    }
}
