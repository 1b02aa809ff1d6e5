//! Purging HTTP caches in front of tilepipe when a metatile changes.
//!
//! Every tile response carries its metatile's surrogate key
//! ([`surrogate_key`], in `xkey` and `Surrogate-Key` headers), so a cache
//! can drop all 64 tiles of a metatile at once. When the renderer writes a
//! metatile, its key is queued here; after a short gathering window the
//! keys go out in batches:
//!
//! - to each Varnish of `serve.purge.varnish`: `PURGE /` with the keys in
//!   an `xkey` header, the request vmod_xkey's documentation purges with
//!   (varnish-modules, `vmod_xkey(3)`; `varnish/tilepipe.vcl` handles it);
//! - to each request template of `serve.purge.requests` (a CDN's purge
//!   API): URL, headers and body with `{keys}` (space-separated; URL-
//!   encoded in the URL) and `{keys_json}` (a JSON array) filled in.
//!
//! A target that fails (down, or not 2xx) keeps its keys and is tried
//! again with capped backoff; the others go on.
//!
//! When the server stops, keys still gathering or waiting for a retry are
//! sent once more, to all targets at once, for at most [`FLUSH_LIMIT`]:
//! a tile re-rendered just before a restart would otherwise stay stale in
//! the caches until its TTL. What a target does not take in that time is
//! dropped with a warning.

use super::config::{PurgeConfig, PurgeRequest};
use crate::metrics::Metrics;
use crate::tile::{Metatile, METATILE};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The surrogate key of a metatile of `style`: `style/z/x/y` of its
/// top-left tile, the same for all its tiles.
pub fn surrogate_key(style: &str, metatile: Metatile) -> String {
    let mask = !(METATILE - 1);
    format!(
        "{style}/{}/{}/{}",
        metatile.z,
        metatile.x & mask,
        metatile.y & mask
    )
}

/// Where surrogate keys to purge are sent: the serve stage's purge task.
/// Cloned by whoever changes metatiles without a render (the daemon's
/// touches and deletes).
#[derive(Clone)]
pub struct PurgeSender(mpsc::UnboundedSender<String>);

impl PurgeSender {
    /// A sender and the receiver [`run`] takes.
    pub fn channel() -> (PurgeSender, mpsc::UnboundedReceiver<String>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (PurgeSender(sender), receiver)
    }

    /// Queues the purge of `style`'s `metatile`; a no-op once the server
    /// stopped.
    pub fn purge(&self, style: &str, metatile: Metatile) {
        let _ = self.0.send(surrogate_key(style, metatile));
    }
}

/// Placeholders of request templates.
const KEYS: &str = "{keys}";
const KEYS_JSON: &str = "{keys_json}";

/// One purge endpoint: a request template and its keys still to send.
struct Target {
    request: PurgeRequest,
    pending: BTreeSet<String>,
    /// Not before this instant (backoff after a failure).
    next_attempt: Instant,
    backoff: Duration,
    failing: bool,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long stopping waits for the last purges: a restart is not held up
/// by a cache that does not answer.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(2);
/// The final flush's own limit, a little under [`FLUSH_LIMIT`], so that it
/// ends (and says what it dropped) before the server stops waiting.
const FINAL_SEND_LIMIT: Duration = Duration::from_millis(1800);
/// Longer than any purge should take; a target that does not answer in
/// time is retried like one that failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The `PURGE /` request of a Varnish running `varnish/tilepipe.vcl`.
pub fn varnish_request(base: &str) -> PurgeRequest {
    PurgeRequest {
        url: base.to_string(),
        method: "PURGE".into(),
        headers: [("xkey".to_string(), KEYS.to_string())].into(),
        body: String::new(),
    }
}

/// Fills the placeholders of `template` with `keys`; `in_url` encodes
/// them for a URL.
fn fill(template: &str, keys: &[&String], in_url: bool) -> String {
    let spaced = keys
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let spaced = if in_url {
        url::form_urlencoded::byte_serialize(spaced.as_bytes()).collect()
    } else {
        spaced
    };
    let json = serde_json::to_string(keys).expect("strings serialise");
    template.replace(KEYS_JSON, &json).replace(KEYS, &spaced)
}

/// Builds one request of `target` for `keys`.
fn build(
    http: &reqwest::Client,
    request: &PurgeRequest,
    keys: &[&String],
) -> Result<reqwest::RequestBuilder, String> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|e| format!("method {:?}: {e}", request.method))?;
    let url = fill(&request.url, keys, true);
    let mut builder = http.request(method, &url);
    for (name, value) in &request.headers {
        builder = builder.header(name, fill(value, keys, false));
    }
    if !request.body.is_empty() {
        builder = builder.body(fill(&request.body, keys, false));
    }
    Ok(builder)
}

/// Checks the templates of `config` by building a request for a sample
/// key; messages name the key of the configuration.
pub fn validate(config: &PurgeConfig) -> Result<(), String> {
    let http = reqwest::Client::new();
    let sample = ["style/12/2048/1360".to_string()];
    let sample: Vec<&String> = sample.iter().collect();
    for (key, request) in targets(config) {
        build(&http, &request, &sample)
            .and_then(|b| b.build().map_err(|e| e.to_string()))
            .map_err(|e| format!("{key}: {e}"))?;
    }
    if config.max_keys == 0 {
        return Err("serve.purge.max_keys must be at least 1".into());
    }
    Ok(())
}

/// Every target with the configuration key naming it.
fn targets(config: &PurgeConfig) -> Vec<(String, PurgeRequest)> {
    let varnish = config
        .varnish
        .iter()
        .enumerate()
        .map(|(i, base)| (format!("serve.purge.varnish[{i}]"), varnish_request(base)));
    let requests = config
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("serve.purge.requests[{i}]"), r.clone()));
    varnish.chain(requests).collect()
}

/// Sends the keys arriving on `keys` to every target of `config` until
/// `stop` completes or the channel closes; then sends what is pending
/// once more (see [`FLUSH_LIMIT`]) and returns.
pub async fn run(
    config: PurgeConfig,
    mut keys: mpsc::UnboundedReceiver<String>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let http = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => return warn!("no cache purges: {e}"),
    };
    let mut targets: Vec<Target> = targets(&config)
        .into_iter()
        .map(|(_, request)| Target {
            request,
            pending: BTreeSet::new(),
            next_attempt: Instant::now(),
            backoff: FIRST_BACKOFF,
            failing: false,
        })
        .collect();
    info!(
        targets = targets.len(),
        "purging caches in front of tilepipe on re-render"
    );
    let window = Duration::from_millis(config.delay_ms);
    let mut open = true;
    while open || targets.iter().any(|t| !t.pending.is_empty()) {
        let retry_at = targets
            .iter()
            .filter(|t| !t.pending.is_empty())
            .map(|t| t.next_attempt)
            .min();
        // Wait for a key, or for a target's retry.
        let woke = tokio::select! {
            key = keys.recv(), if open => key.map_or(Woke::Closed, Woke::Key),
            _ = sleep_until(retry_at) => Woke::Retry,
            _ = &mut stop => Woke::Stop,
        };
        match woke {
            Woke::Key(key) => {
                add(&mut targets, key);
                metrics.set_purge_pending(pending(&targets));
                // Gather what else comes within the window.
                let stopped = tokio::select! {
                    _ = tokio::time::sleep(window) => false,
                    _ = &mut stop => true,
                };
                if stopped {
                    break;
                }
            }
            Woke::Closed => open = false,
            Woke::Retry => {}
            Woke::Stop => break,
        }
        loop {
            match keys.try_recv() {
                Ok(key) => add(&mut targets, key),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        for target in targets.iter_mut() {
            if target.pending.is_empty() || target.next_attempt > now {
                continue;
            }
            send(&http, target, config.max_keys, &metrics).await;
            if !open && target.failing {
                // Stopping: one more try only.
                target.pending.clear();
            }
        }
        metrics.set_purge_pending(pending(&targets));
    }
    // Stopping: whatever arrived, and every target's pending keys, backoff
    // or not, get one last attempt.
    while let Ok(key) = keys.try_recv() {
        add(&mut targets, key);
    }
    if pending(&targets) > 0 {
        flush(&http, &mut targets, config.max_keys, &metrics).await;
    }
}

/// The last attempt for every target's pending keys, all targets at once
/// and within [`FINAL_SEND_LIMIT`]; what is left is dropped and counted in
/// a warning (the caches expire those tiles with their TTL).
async fn flush(http: &reqwest::Client, targets: &mut [Target], max_keys: usize, metrics: &Metrics) {
    let sends = targets
        .iter_mut()
        .filter(|t| !t.pending.is_empty())
        .map(|target| send(http, target, max_keys, metrics));
    let finished = tokio::time::timeout(FINAL_SEND_LIMIT, futures_util::future::join_all(sends))
        .await
        .is_ok();
    for target in targets.iter_mut() {
        if !target.pending.is_empty() {
            let why = if finished { "failed" } else { "timed out" };
            warn!(
                url = target.request.url,
                keys = target.pending.len(),
                "stopping: the last cache purge {why}; those tiles stay cached until they expire"
            );
            target.pending.clear();
        }
    }
    metrics.set_purge_pending(0);
}

/// Keys waiting, over all targets.
fn pending(targets: &[Target]) -> u64 {
    targets.iter().map(|t| t.pending.len() as u64).sum()
}

/// Why the purge loop woke.
enum Woke {
    Key(String),
    Closed,
    Retry,
    Stop,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn add(targets: &mut [Target], key: String) {
    for target in targets.iter_mut() {
        target.pending.insert(key.clone());
    }
}

/// Sends `target`'s pending keys in batches of `max_keys`; stops at the
/// first failure, keeping what is unsent.
async fn send(http: &reqwest::Client, target: &mut Target, max_keys: usize, metrics: &Metrics) {
    while !target.pending.is_empty() {
        let batch: Vec<String> = target.pending.iter().take(max_keys).cloned().collect();
        let refs: Vec<&String> = batch.iter().collect();
        let result = match build(http, &target.request, &refs) {
            Ok(builder) => builder.send().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let result = result.and_then(|response| {
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("answered {}", response.status()))
            }
        });
        match result {
            Ok(()) => {
                for key in &batch {
                    target.pending.remove(key);
                }
                metrics.add_purged(batch.len() as u64);
                if target.failing {
                    info!(url = target.request.url, "cache purges work again");
                }
                target.failing = false;
                target.backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                metrics.add_purge_failure();
                if !target.failing {
                    warn!(
                        url = target.request.url,
                        keys = target.pending.len(),
                        "cache purge failed: {e}; keeping the keys and retrying with backoff"
                    );
                }
                target.failing = true;
                target.next_attempt = Instant::now() + target.backoff;
                target.backoff = (target.backoff * 2).min(MAX_BACKOFF);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_metatile_origin() {
        let key = |x, y| surrogate_key("osm", Metatile { z: 12, x, y });
        assert_eq!(key(2055, 1361), "osm/12/2048/1360");
        assert_eq!(key(2048, 1360), key(2055, 1367));
        assert_ne!(key(2056, 1360), key(2055, 1360));
    }

    #[test]
    fn templates_are_filled() {
        let keys = ["a/1/0/0".to_string(), "a/2/0/0".to_string()];
        let keys: Vec<&String> = keys.iter().collect();
        assert_eq!(fill("{keys}", &keys, false), "a/1/0/0 a/2/0/0");
        assert_eq!(
            fill("https://cdn/purge?tags={keys}", &keys, true),
            "https://cdn/purge?tags=a%2F1%2F0%2F0+a%2F2%2F0%2F0"
        );
        assert_eq!(
            fill(r#"{"tags":{keys_json}}"#, &keys, false),
            r#"{"tags":["a/1/0/0","a/2/0/0"]}"#
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        let mut config = PurgeConfig {
            varnish: vec!["http://127.0.0.1:6081/".into()],
            ..PurgeConfig::default()
        };
        assert!(validate(&config).is_ok());
        config.requests.push(PurgeRequest {
            url: "not a url".into(),
            method: "POST".into(),
            headers: Default::default(),
            body: String::new(),
        });
        let err = validate(&config).unwrap_err();
        assert!(err.contains("serve.purge.requests[0]"), "{err}");
        config.requests[0].url = "https://cdn.example/purge".into();
        config.requests[0].method = "NOT A METHOD".into();
        assert!(validate(&config).unwrap_err().contains("method"));
    }
}
