//! Which address a request came from, when proxies stand in front of the function.
//!
//! Every proxy of the common kind (Envoy with `use_remote_address`, Go's `httputil.ReverseProxy` in Knative's
//! activator and queue-proxy, the gateway's `POST /login`) appends the address *it* saw to `X-Forwarded-For`.
//! Entries to the left of the ones our own proxies appended were written by the client, who may write
//! anything there, so only the entry appended by the outermost proxy we trust names the client. How many
//! proxies that is depends on the deployment: it is the `TRUSTED_PROXY_HOPS` setting ([`trusted_proxy_hops`]).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::config::{ConfigError, Env};

/// The variable naming how many proxies in front of a function append to `X-Forwarded-For`.
pub const TRUSTED_PROXY_HOPS: &str = "TRUSTED_PROXY_HOPS";

/// The client's address for a request that reached us from `peer` (the TCP peer; `None` under Lambda) with
/// `headers`, behind `hops` trusted proxies:
///
/// - `hops = 0`: `peer` (nothing in `X-Forwarded-For` is trusted);
/// - `hops = n`: the `n`-th entry from the right of `X-Forwarded-For` (all its header fields, in order),
///   the one the `n`-th trusted proxy appended; `peer` when the header has fewer than `n` entries or that
///   entry is not an IP address (`192.0.2.1`, `2001:db8::1`, with or without a port: `192.0.2.1:443`,
///   `[2001:db8::1]:443`).
///
/// Entries are split on commas in the raw bytes, so a client that sends non-ASCII bytes in its part of the
/// header cannot hide the entries our proxies appended after it.
pub fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    if hops == 0 {
        return peer;
    }
    let entries: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .collect();
    entries
        .len()
        .checked_sub(hops)
        .and_then(|i| parse_entry(entries[i]))
        .or(peer)
}

fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Reads `TRUSTED_PROXY_HOPS`, with `default` when unset: the number of proxies in front of the function that
/// append the address they saw to `X-Forwarded-For` (see [`client_address`]).
///
/// # Errors
/// [`ConfigError`] when set but not a whole number, or above 16 (no real chain of proxies is that long; a
/// larger value is a typo).
pub fn trusted_proxy_hops(env: &Env, default: usize) -> Result<usize, ConfigError> {
    let hops = env.or(TRUSTED_PROXY_HOPS, default)?;
    if hops > 16 {
        return Err(ConfigError::new(
            TRUSTED_PROXY_HOPS,
            format!("must be at most 16, got {hops}"),
        ));
    }
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn zero_hops_is_the_peer_whatever_the_header_says() {
        let h = headers(&[b"203.0.113.9"]);
        assert_eq!(client_address(ip("192.0.2.1"), &h, 0), ip("192.0.2.1"));
        assert_eq!(client_address(None, &h, 0), None);
    }

    #[test]
    fn n_hops_is_the_nth_entry_from_the_right() {
        let h = headers(&[b"198.51.100.1, 203.0.113.9, 10.0.0.7"]);
        let peer = ip("127.0.0.1");
        assert_eq!(client_address(peer, &h, 1), ip("10.0.0.7"));
        assert_eq!(client_address(peer, &h, 2), ip("203.0.113.9"));
        assert_eq!(client_address(peer, &h, 3), ip("198.51.100.1"));
    }

    #[test]
    fn the_client_cannot_choose_by_prepending_entries() {
        let peer = ip("127.0.0.1");
        for claimed in ["1.2.3.4", "1.2.3.4, 5.6.7.8", "garbage", ""] {
            let chain = format!("{claimed}, 203.0.113.9");
            let h = headers(&[chain.as_bytes()]);
            assert_eq!(client_address(peer, &h, 1), ip("203.0.113.9"), "{chain}");
        }
        // Non-UTF-8 bytes in the client's part do not hide the trusted entry.
        let h = headers(&[b"\xff\xfe, 203.0.113.9"]);
        assert_eq!(client_address(peer, &h, 1), ip("203.0.113.9"));
    }

    #[test]
    fn several_header_fields_count_as_one_list_in_order() {
        let h = headers(&[b"198.51.100.1", b"203.0.113.9, 10.0.0.7"]);
        let peer = ip("127.0.0.1");
        assert_eq!(client_address(peer, &h, 2), ip("203.0.113.9"));
        assert_eq!(client_address(peer, &h, 3), ip("198.51.100.1"));
    }

    #[test]
    fn too_few_entries_or_no_address_falls_back_to_the_peer() {
        let peer = ip("192.0.2.1");
        assert_eq!(client_address(peer, &HeaderMap::new(), 1), peer);
        assert_eq!(client_address(peer, &headers(&[b"203.0.113.9"]), 2), peer);
        assert_eq!(client_address(peer, &headers(&[b"unknown"]), 1), peer);
        assert_eq!(client_address(peer, &headers(&[b"1.2.3.4, "]), 1), peer);
    }

    #[test]
    fn entries_with_ports_and_ipv6_parse() {
        let peer = ip("127.0.0.1");
        assert_eq!(
            client_address(peer, &headers(&[b"203.0.113.9:4711"]), 1),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(peer, &headers(&[b" 2001:db8::1 "]), 1),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_address(peer, &headers(&[b"[2001:db8::1]:443"]), 1),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn the_setting_has_a_default_and_a_bound() {
        assert_eq!(
            trusted_proxy_hops(&Env::from_pairs([("X", "1")]), 1).unwrap(),
            1
        );
        assert_eq!(
            trusted_proxy_hops(&Env::from_pairs([(TRUSTED_PROXY_HOPS, "2")]), 0).unwrap(),
            2
        );
        for bad in ["-1", "abc", "17"] {
            let err =
                trusted_proxy_hops(&Env::from_pairs([(TRUSTED_PROXY_HOPS, bad)]), 0).unwrap_err();
            assert_eq!(err.var, TRUSTED_PROXY_HOPS, "{bad}");
        }
    }
}
