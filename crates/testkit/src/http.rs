//! Plain HTTP/1.1 on loopback with blocking std I/O, for tests and benches
//! that watch what a running `tilepipe` serves without an HTTP client (and
//! independent of the tokio runtime the server runs on).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
/// `GET path` from 127.0.0.1:`port`: the status and the body (chunked
/// bodies joined), or `None` when the server does not answer.
pub fn get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    get_from(std::net::Ipv4Addr::LOCALHOST, port, path)
}

/// [`get`] from another loopback address (127.0.0.2, …), where the
/// multi-node tests run their render nodes.
pub fn get_from(ip: std::net::Ipv4Addr, port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    get_with_head(ip, port, path).map(|(status, _, body)| (status, body))
}

/// [`get_from`] with the response head too (status line and headers,
/// header names lower-cased), to look at a header.
pub fn get_with_head(
    ip: std::net::Ipv4Addr,
    port: u16,
    path: &str,
) -> Option<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect((ip, port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = &response[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some((status, head, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        let start = line_end + 2;
        out.extend_from_slice(data.get(start..start + size)?);
        data = data.get(start + size + 2..)?;
    }
}

/// A port nothing listens on right now (for a server started next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 exchange on an open connection, with blocking std I/O
/// (independent of the tokio runtime the server runs on): sends `request`
/// as is and reads one response. Returns its status and body, or the
/// I/O error (a read timeout, a closed connection).
pub fn exchange(stream: &mut TcpStream, request: &str) -> std::io::Result<(u16, String)> {
    stream.write_all(request.as_bytes())?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while got.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&got[head_end..head_end + length]).to_string();
    Ok((status, body))
}

/// A GET of `path` on a new connection that reads for at most `timeout`.
pub fn get_within(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    exchange(
        &mut stream,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Blocks until the server closes `stream` (read returns 0 or an error),
/// at most `timeout`; the time it took, or `None` when still open.
pub fn wait_closed(stream: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        let left = timeout.checked_sub(started.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if started.elapsed() >= timeout {
                    return None;
                }
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

/// One request a [`RecordingServer`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method, e.g. `PURGE`.
    pub method: String,
    /// The request target, e.g. `/purge?keys=a`.
    pub target: String,
    /// Header lines as `name: value`, names lower-cased.
    pub headers: Vec<String>,
    /// The body (by `Content-Length`).
    pub body: String,
}

impl Recorded {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(str::trim)
        })
    }
}

/// A stand-in for an outside HTTP API (a CDN's purge endpoint) on
/// 127.0.0.1: records every request and answers the statuses it is given
/// in turn, then 200.
pub struct RecordingServer {
    /// Its port.
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
}

impl RecordingServer {
    /// Starts it; the first requests get `statuses` in order.
    pub fn start(statuses: &[u16]) -> RecordingServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        let mut statuses: std::collections::VecDeque<u16> = statuses.iter().copied().collect();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                log.lock().unwrap().push(request);
                let status = statuses.pop_front().unwrap_or(200);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        RecordingServer { port, requests }
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<String> = lines
        .map(|line| match line.split_once(':') {
            Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
            None => line.to_string(),
        })
        .collect();
    let length: usize = headers
        .iter()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Recorded {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
