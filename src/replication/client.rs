//! Downloads from a replication feed: state files and diffs over http(s) or
//! `file://`, with timeouts, a descriptive User-Agent, extra headers, and
//! capped exponential backoff with jitter around every fault.
//!
//! Every `*_once` method makes one attempt; the plain methods retry until
//! the [`RetryPolicy`] gives up. A download counts only when it is complete
//! and valid: a truncated gzip stream, malformed XML or a state file missing
//! keys is an error like a 500, retried and logged, never half-used.
//!
//! Sizes are capped while streaming (bytes received, and bytes the gzip
//! stream inflates to), so a broken or hostile server cannot make the
//! process hold more than the caps, whatever it sends.

use super::config::ReplicationConfig;
use super::feed::Feed;
use super::state::{ReplicationState, StateError};
use crate::osm::osc::{parse_osc, OscError};
use crate::osm::ChangeSet;
use crate::redact::secrets;
use bytes::Bytes;
use rand::Rng;
use std::fmt::Display;
use std::future::Future;
use std::io::Read;
use std::time::Duration;
use tracing::warn;
use url::Url;

/// When and how often to retry a failed download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubles each time.
    pub initial: Duration,
    /// Cap of the delay.
    pub max: Duration,
    /// Give up after this many attempts in total; `None` retries forever.
    pub max_attempts: Option<u32>,
}

impl RetryPolicy {
    /// Never retry: one attempt only.
    pub const ONCE: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(1),
        max_attempts: Some(1),
    };

    /// Delay before retry number `retry` (1-based): `initial · 2^(retry-1)`
    /// capped at `max`, then "equal jitter" (a random point in its upper
    /// half) so that many clients restarted together spread out.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        let half = base / 2;
        half + base.saturating_sub(half).mul_f64(rng.random::<f64>())
    }
}

/// Settings of a [`FeedClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `User-Agent` of every request (default: [`default_user_agent`]).
    pub user_agent: String,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, headers and body.
    pub timeout: Duration,
    /// Extra headers (name, value), sent to the feed's own host only.
    pub headers: Vec<(String, String)>,
    /// Value of a `Cookie` header, sent to the feed's own host only.
    pub cookie: Option<String>,
    /// How failed downloads are retried by the non-`_once` methods.
    pub retry: RetryPolicy,
    /// Most bytes one response body may have (`replication.max_download_mb`).
    pub max_download_bytes: u64,
    /// Most bytes one diff may inflate to (`replication.max_uncompressed_mb`).
    pub max_uncompressed_bytes: u64,
    /// Hosts (`name` or `name:port`) besides the feed's own that redirects
    /// may lead to (`replication.allow_redirect_hosts`).
    pub allow_redirect_hosts: Vec<String>,
}

/// The User-Agent sent unless configured otherwise.
pub fn default_user_agent() -> String {
    format!(
        "tilepipe/{} (OSM tile pipeline; replication client)",
        env!("CARGO_PKG_VERSION")
    )
}

impl ClientOptions {
    /// The options the `replication:` section sets; retries never give up
    /// (callers that must, such as `status`, use [`FeedClient::with_retry`]).
    pub fn from_config(config: &ReplicationConfig) -> Self {
        ClientOptions {
            user_agent: config.user_agent.clone().unwrap_or_else(default_user_agent),
            connect_timeout: config.connect_timeout(),
            timeout: config.timeout(),
            headers: config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cookie: config.cookie.clone(),
            retry: RetryPolicy {
                initial: Duration::from_secs(config.retry_initial_secs),
                max: Duration::from_secs(config.retry_max_secs),
                max_attempts: None,
            },
            max_download_bytes: config.max_download_bytes(),
            max_uncompressed_bytes: config.max_uncompressed_bytes(),
            allow_redirect_hosts: config.allow_redirect_hosts.clone(),
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions::from_config(&ReplicationConfig::default())
    }
}

/// Why a download failed. All kinds but [`FetchError::Setup`] and
/// [`FetchError::Url`] are worth retrying: feeds have transient 404s while
/// syncing, 5xx under load, and truncated bodies when a connection drops.
///
/// Every `url` field is the requested URL with its password and tokens
/// redacted, fit for logs.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// HTTP 404, or a missing `file://` path.
    #[error("{url}: not found (404)")]
    NotFound {
        /// The URL requested.
        url: String,
    },
    /// Any other non-2xx HTTP status (after redirects).
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// Connecting, sending or receiving failed, or timed out.
    #[error("{url}: {message}")]
    Network {
        /// The URL requested.
        url: String,
        /// The error with its whole cause chain, redacted.
        message: String,
    },
    /// Reading a `file://` feed failed for another reason than absence.
    #[error("{url}: {source}")]
    Io {
        /// The URL read.
        url: String,
        /// The file system error.
        source: std::io::Error,
    },
    /// A state file that does not parse.
    #[error("{url}: bad state file: {source}")]
    BadState {
        /// The state file's URL.
        url: String,
        /// What is wrong with it.
        source: StateError,
    },
    /// `<n>.state.txt` names another sequence than `n`.
    #[error("{url}: state file says sequence {found}, expected {expected}")]
    WrongSequence {
        /// The state file's URL.
        url: String,
        /// The sequence its path stands for.
        expected: u64,
        /// Its `sequenceNumber`.
        found: u64,
    },
    /// The diff's gzip stream is corrupt or ends early.
    #[error("{url}: corrupt or truncated gzip data: {source}")]
    Gzip {
        /// The diff's URL.
        url: String,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// The diff decompressed but is not a valid OsmChange document.
    #[error("bad diff: {0}")]
    BadDiff(#[source] OscError),
    /// The server's `state.txt` is behind the local position (see
    /// [`Follower::latest_state`](super::follower::Follower::latest_state)).
    #[error(
        "the server's newest state (sequence {server}) is older than our position {local}: \
         the server went backwards or serves a different feed"
    )]
    Backwards {
        /// The server's newest sequence.
        server: u64,
        /// The local position's sequence.
        local: u64,
    },
    /// A sequence at or below the server's newest state is missing (404).
    #[error("sequence {sequence} is not published, although the server's newest state is {latest}: a gap in the feed")]
    Gap {
        /// The missing sequence.
        sequence: u64,
        /// The server's newest sequence.
        latest: u64,
    },
    /// A download or its inflated diff passed its configured size cap.
    #[error("{url}: {what} exceeds {key} ({limit_mb} MB); raise it if the feed really publishes such diffs")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// "the response" or "the uncompressed diff".
        what: &'static str,
        /// The configuration key of the limit.
        key: &'static str,
        /// The limit, in MB (10^6 bytes).
        limit_mb: u64,
    },
    /// A redirect that may not be followed (another host not listed in
    /// `replication.allow_redirect_hosts`, https to http, too many hops).
    #[error("{url}: redirect to {location} refused: {reason}")]
    Redirect {
        /// The URL first requested.
        url: String,
        /// Where the redirect pointed, redacted.
        location: String,
        /// Why it was refused.
        reason: String,
    },
    /// The client cannot be built or used as configured (bad header, bad
    /// `file://` path, a task failure); not retried.
    #[error("replication client setup: {0}")]
    Setup(String),
    /// The feed URL itself is unusable (its message names the URL).
    #[error("{0}")]
    Url(#[from] super::feed::FeedUrlError),
}

impl FetchError {
    /// Whether retrying may help: false only for [`FetchError::Setup`] and
    /// [`FetchError::Url`].
    pub fn is_retryable(&self) -> bool {
        !matches!(self, FetchError::Setup(_) | FetchError::Url(_))
    }
}

/// One diff, decompressed and parsed.
#[derive(Debug, Clone)]
pub struct Diff {
    /// The diff's sequence number.
    pub sequence: u64,
    /// Its changes, each object once at its newest version.
    pub changes: ChangeSet,
    /// Size of the uncompressed XML, what batch bounds count.
    pub xml_bytes: u64,
}

/// A client for one feed.
#[derive(Debug, Clone)]
pub struct FeedClient {
    feed: Feed,
    http: reqwest::Client,
    retry: RetryPolicy,
    max_download_bytes: u64,
    max_uncompressed_bytes: u64,
    /// The configured headers and cookie: sent to the feed's own host only.
    private_headers: reqwest::header::HeaderMap,
    allow_redirect_hosts: Vec<String>,
}

/// Redirects followed at most, as curl's and reqwest's default.
const MAX_REDIRECTS: usize = 10;

impl FeedClient {
    /// The client every command uses: the feed at `url` with the configured
    /// HTTP settings. The cadence is the configured one, else read from the
    /// URL, else minutely.
    pub fn from_config(url: &str, config: &ReplicationConfig) -> Result<Self, FetchError> {
        let feed = match config.interval {
            Some(interval) => Feed::new(url, interval)?,
            None => Feed::with_guessed_interval(url, super::Interval::Minute)?,
        };
        FeedClient::new(feed, &ClientOptions::from_config(config))
    }

    /// A client for `feed`; fails with [`FetchError::Setup`] on a header or
    /// cookie that is not valid HTTP.
    pub fn new(feed: Feed, options: &ClientOptions) -> Result<Self, FetchError> {
        let mut headers = reqwest::header::HeaderMap::new();
        let setup = |e: &dyn Display| FetchError::Setup(e.to_string());
        for (name, value) in &options.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| setup(&format!("header name {name:?}: {e}")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|e| setup(&format!("header {name}: {e}")))?;
            headers.insert(name, value);
        }
        if let Some(cookie) = &options.cookie {
            let value = reqwest::header::HeaderValue::from_str(cookie)
                .map_err(|e| setup(&format!("cookie: {e}")))?;
            headers.insert(reqwest::header::COOKIE, value);
        }
        // Redirects are followed by hand (see `get`): reqwest would forward
        // default headers to any host and only strips Authorization and
        // Cookie on the way.
        let http = reqwest::Client::builder()
            .user_agent(&options.user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .build()
            .map_err(|e| setup(&e))?;
        Ok(FeedClient {
            feed,
            http,
            retry: options.retry,
            max_download_bytes: options.max_download_bytes,
            max_uncompressed_bytes: options.max_uncompressed_bytes,
            private_headers: headers,
            allow_redirect_hosts: options.allow_redirect_hosts.clone(),
        })
    }

    /// The feed this client downloads from.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// The policy the retrying methods follow.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The same client with another retry policy (e.g. one attempt for
    /// `status`, a few for `init`, forever for the daemon).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn too_large_download(&self, url: &Url) -> FetchError {
        FetchError::TooLarge {
            url: shown(url),
            what: "the response",
            key: "replication.max_download_mb",
            limit_mb: self.max_download_bytes / MB,
        }
    }

    /// One GET of `url` (or read of a `file://` path), the whole body, at
    /// most `max_download_bytes` of it.
    async fn get(&self, url: &Url) -> Result<Bytes, FetchError> {
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|_| FetchError::Setup(format!("{} is not a local path", shown(url))))?;
            let size = tokio::fs::metadata(&path).await.map(|m| m.len());
            if size.is_ok_and(|size| size > self.max_download_bytes) {
                return Err(self.too_large_download(url));
            }
            return match tokio::fs::read(&path).await {
                Ok(data) => Ok(Bytes::from(data)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(FetchError::NotFound { url: shown(url) })
                }
                Err(source) => Err(FetchError::Io {
                    url: shown(url),
                    source,
                }),
            };
        }
        let network = |e: reqwest::Error| FetchError::Network {
            url: shown(url),
            message: describe_reqwest_error(&e),
        };
        let mut current = url.clone();
        let mut hops = 0;
        let mut response = loop {
            let mut request = self.http.get(current.clone());
            // Configured headers (tokens, cookies) go to the feed's own
            // host only, never to a host a redirect leads to.
            if same_host(&current, url) {
                request = request.headers(self.private_headers.clone());
            }
            let response = request.send().await.map_err(network)?;
            if !response.status().is_redirection() {
                break response;
            }
            let Some(location) = response.headers().get(reqwest::header::LOCATION) else {
                break response;
            };
            let refuse = |location: &str, reason: &str| FetchError::Redirect {
                url: shown(url),
                location: secrets(location).into_owned(),
                reason: reason.to_string(),
            };
            let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
            let next = current
                .join(&location)
                .map_err(|e| refuse(&location, &format!("not a URL: {e}")))?;
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(refuse(next.as_str(), "too many redirects"));
            }
            if let Err(reason) = self.redirect_allowed(url, &current, &next) {
                return Err(refuse(next.as_str(), &reason));
            }
            current = next;
        };
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound { url: shown(url) });
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: shown(url),
                status: status.as_u16(),
            });
        }
        // Content-Length can be absent or lie, so it only allows an early
        // refusal; the count of what arrives is what enforces the cap.
        if response
            .content_length()
            .is_some_and(|length| length > self.max_download_bytes)
        {
            return Err(self.too_large_download(url));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(network)? {
            if (body.len() + chunk.len()) as u64 > self.max_download_bytes {
                return Err(self.too_large_download(url));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }

    /// Whether a redirect from `from` to `to` may be followed, on the way
    /// to `original`: to the same host and port, or to a configured one,
    /// and never from https down to plain http.
    fn redirect_allowed(&self, original: &Url, from: &Url, to: &Url) -> Result<(), String> {
        if from.scheme() == "https" && to.scheme() != "https" {
            return Err("it leaves https".into());
        }
        if !matches!(to.scheme(), "https" | "http") {
            return Err(format!("scheme {} is not http(s)", to.scheme()));
        }
        if same_host(to, original) {
            return Ok(());
        }
        let host = to.host_str().unwrap_or("");
        let port = to.port_or_known_default();
        let allowed = self.allow_redirect_hosts.iter().any(|entry| {
            match entry
                .rsplit_once(':')
                .filter(|(_, p)| p.parse::<u16>().is_ok())
            {
                Some((name, p)) => name.eq_ignore_ascii_case(host) && p.parse().ok() == port,
                None => entry.eq_ignore_ascii_case(host),
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{} is another host than the feed's; list it in replication.allow_redirect_hosts to allow it",
                host_and_port(to)
            ))
        }
    }

    /// The newest state (`<base>state.txt`), one attempt.
    pub async fn latest_state_once(&self) -> Result<ReplicationState, FetchError> {
        let url = self.feed.latest_state_url();
        let body = self.get(&url).await?;
        parse_state(&url, &body)
    }

    /// The state of sequence `n`, one attempt; `None` when the server has no
    /// such state (not yet published, or pruned).
    pub async fn state_once(&self, n: u64) -> Result<Option<ReplicationState>, FetchError> {
        let url = self.feed.state_url(n);
        let body = match self.get(&url).await {
            Ok(body) => body,
            Err(FetchError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let state = parse_state(&url, &body)?;
        if state.sequence != n {
            return Err(FetchError::WrongSequence {
                url: shown(&url),
                expected: n,
                found: state.sequence,
            });
        }
        Ok(Some(state))
    }

    /// Diff `n`, downloaded, decompressed and parsed; one attempt.
    pub async fn diff_once(&self, n: u64) -> Result<Diff, FetchError> {
        let url = self.feed.diff_url(n);
        let body = self.get(&url).await?;
        let limit = self.max_uncompressed_bytes;
        // Decompressing and parsing a large diff is CPU work: keep it off the
        // async threads.
        tokio::task::spawn_blocking(move || decode_diff(n, &url, &body, limit))
            .await
            .map_err(|e| FetchError::Setup(format!("diff decoder task failed: {e}")))?
    }

    /// Runs `attempt` until it succeeds, the error is not retryable, or the
    /// policy gives up; each failure is logged with what was being done.
    pub async fn retrying<T, F, Fut>(
        &self,
        what: impl Display,
        mut attempt: F,
    ) -> Result<T, FetchError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, FetchError>>,
    {
        let mut tries = 0u32;
        loop {
            tries += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) if self.retry.max_attempts.is_some_and(|max| tries >= max) => {
                    if tries > 1 {
                        warn!("{what}: giving up after {tries} attempts: {e}");
                    }
                    return Err(e);
                }
                Err(e) => {
                    let delay = self.retry.delay(tries, &mut rand::rng());
                    warn!(
                        attempt = tries,
                        retry_in_ms = delay.as_millis() as u64,
                        "{what} failed: {e}; retrying in {:.1} s",
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The newest state, retried per policy.
    pub async fn latest_state(&self) -> Result<ReplicationState, FetchError> {
        self.retrying("fetching the newest state", || self.latest_state_once())
            .await
    }

    /// State `n`, retried per policy; a 404 is an answer (`None`), not a fault.
    pub async fn state(&self, n: u64) -> Result<Option<ReplicationState>, FetchError> {
        self.retrying(format_args!("fetching state {n}"), || self.state_once(n))
            .await
    }

    /// Diff `n`, retried per policy (a 404 included: the caller only asks
    /// for published sequences, so a missing one is a fault to wait out).
    pub async fn diff(&self, n: u64) -> Result<Diff, FetchError> {
        self.retrying(format_args!("fetching diff {n}"), || self.diff_once(n))
            .await
    }
}

fn parse_state(url: &Url, body: &[u8]) -> Result<ReplicationState, FetchError> {
    let text = String::from_utf8_lossy(body);
    ReplicationState::parse(&text).map_err(|source| FetchError::BadState {
        url: shown(url),
        source,
    })
}

const MB: u64 = 1_000_000;

/// A URL as messages show it: without its password or tokens.
fn shown(url: &Url) -> String {
    secrets(url.as_str()).into_owned()
}

/// "Same host" for redirects and headers: the same host name (or address)
/// and the same port, the scheme's default when none is written.
fn same_host(a: &Url, b: &Url) -> bool {
    a.host_str()
        .zip(b.host_str())
        .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
        && a.port_or_known_default() == b.port_or_known_default()
}

fn host_and_port(url: &Url) -> String {
    match url.port_or_known_default() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_string(),
    }
}

/// Gunzips and parses in one stream, so memory holds the compressed body
/// and the parsed objects but never the whole XML. Nothing of a diff is
/// used unless all of it reads: the parser reads to the end of the gzip
/// stream (its CRC included) before it reports success.
fn decode_diff(sequence: u64, url: &Url, body: &[u8], limit: u64) -> Result<Diff, FetchError> {
    let mut xml = InflateLimit {
        inner: flate2::read::MultiGzDecoder::new(body),
        count: 0,
        limit,
        exceeded: false,
        gzip_error: None,
    };
    let parsed = parse_osc(
        std::io::BufReader::with_capacity(64 * 1024, &mut xml),
        &shown(url),
    );
    if xml.exceeded {
        return Err(FetchError::TooLarge {
            url: shown(url),
            what: "the uncompressed diff",
            key: "replication.max_uncompressed_mb",
            limit_mb: limit / MB,
        });
    }
    if let Some(source) = xml.gzip_error.take() {
        return Err(FetchError::Gzip {
            url: shown(url),
            source,
        });
    }
    let changes = parsed.map_err(FetchError::BadDiff)?;
    Ok(Diff {
        sequence,
        changes,
        xml_bytes: xml.count,
    })
}

/// Counts inflated bytes and fails the read once they pass `limit`; keeps
/// the decoder's own error, so a corrupt stream is reported as such rather
/// than as the XML error it caused.
struct InflateLimit<R> {
    inner: R,
    count: u64,
    limit: u64,
    exceeded: bool,
    gzip_error: Option<std::io::Error>,
}

impl<R: Read> Read for InflateLimit<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.exceeded {
            return Err(std::io::Error::other("size limit exceeded"));
        }
        let n = match self.inner.read(out) {
            Ok(n) => n,
            Err(e) => {
                let message = e.to_string();
                self.gzip_error = Some(e);
                return Err(std::io::Error::other(message));
            }
        };
        self.count += n as u64;
        if self.count > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("size limit exceeded"));
        }
        Ok(n)
    }
}

/// reqwest's Display hides the cause ("error sending request"); walk the
/// chain so logs say "connection refused" or "operation timed out".
fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut message = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    // reqwest's messages quote the URL, credentials and all.
    secrets(&message).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let policy = RetryPolicy {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(300),
            max_attempts: None,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (retry, full) in [(1, 2), (2, 4), (3, 8), (8, 256), (9, 300), (40, 300)] {
            for _ in 0..50 {
                let d = policy.delay(retry, &mut rng);
                let full = Duration::from_secs(full);
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
            }
        }
    }

    #[test]
    fn gzip_and_xml_faults_are_errors() {
        let url = Url::parse("http://x/000/000/001.osc.gz").unwrap();
        let xml = b"<?xml version='1.0'?>\n<osmChange version=\"0.6\">\n<create>\n<node id=\"1\" version=\"1\" lat=\"1\" lon=\"2\"/>\n</create>\n</osmChange>\n";
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
            enc.write_all(xml).unwrap();
            enc.finish().unwrap();
        }
        let diff = decode_diff(1, &url, &gz, u64::MAX).unwrap();
        assert_eq!(diff.changes.len(), 1);
        assert_eq!(diff.xml_bytes, xml.len() as u64);

        let truncated = &gz[..gz.len() / 2];
        assert!(matches!(
            decode_diff(1, &url, truncated, u64::MAX),
            Err(FetchError::Gzip { .. })
        ));
        let mut corrupt = gz.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0xff;
        corrupt[mid + 1] ^= 0xff;
        assert!(decode_diff(1, &url, &corrupt, u64::MAX).is_err());

        // One byte under the XML's size is over the limit.
        let err = decode_diff(1, &url, &gz, xml.len() as u64 - 1).unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
        assert!(decode_diff(1, &url, &gz, xml.len() as u64).is_ok());
    }
}
