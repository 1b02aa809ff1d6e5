//! Who the client of a request is: its TCP peer, or the address trusted
//! proxies forwarded; whether it may use the admin endpoints; which
//! address throttling counts.

use super::super::config::ForwardedFor;
use super::{text, AppState};
use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use std::net::{IpAddr, SocketAddr};

/// IPv4-mapped IPv6 addresses (a dual-stack listener's IPv4 peers) as
/// IPv4, so that IPv4 networks match them.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_networks(networks: &[ipnet::IpNet], ip: IpAddr) -> bool {
    networks.iter().any(|net| net.contains(&ip))
}

/// `client` is the address from [`client_addr`].
pub(super) fn is_admin(state: &AppState, client: IpAddr) -> bool {
    in_networks(&state.admin, canonical(client))
}

/// Every `X-Forwarded-For` entry, over all its header lines in order
/// (RFC 9110 5.3: repeated lines are one comma-separated list). A line
/// that is not text reads as one unparsable entry.
fn forwarded_entries(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("?").split(','))
        .map(str::trim)
}

/// An `X-Forwarded-For` entry: an address, or one with a port as some
/// proxies write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

/// The client of a request: its TCP peer, unless the peer is one of
/// `serve.trusted_proxies`; then the rightmost `X-Forwarded-For` entry
/// that is not a trusted proxy (nginx's realip module with
/// `real_ip_recursive on`). Entries left of the first untrusted one are
/// the client's own claims and are not believed. An unparsable entry ends
/// the walk at the last trusted hop.
pub(crate) fn client_addr(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = canonical(peer);
    if !in_networks(&state.trusted, peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_entries(headers).rev() {
        let Some(ip) = parse_forwarded(entry) else {
            break;
        };
        client = canonical(ip);
        if !in_networks(&state.trusted, client) {
            break;
        }
    }
    client
}

pub(super) fn forbidden() -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        "Forbidden: this endpoint is open to serve.admin_networks only\n",
    )
}

/// The client address throttling counts: with trusted proxies the
/// established `client`; without, the peer or the `X-Forwarded-For` entry
/// `throttle.x_forwarded_for` picks (mod_tile's
/// `ModTileEnableTileThrottlingXForward`, unverified).
pub(super) fn throttle_ip(state: &AppState, client: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !state.trusted.is_empty() {
        return client;
    }
    let mut entries = forwarded_entries(headers).filter(|s| !s.is_empty());
    let entry = match state.settings.throttle.x_forwarded_for {
        ForwardedFor::None => None,
        ForwardedFor::First => entries.next(),
        ForwardedFor::Last => entries.next_back(),
    };
    entry.and_then(parse_forwarded).unwrap_or(client)
}
