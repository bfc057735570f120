//! The client address of a forwarded request.
//!
//! Without `--trust-forwarded-for` the client is the TCP peer: forwarded headers are
//! ignored, since anyone can send them. With it, the client is the right-most address of
//! `X-Forwarded-For` that is not a trusted proxy (proxies append, so entries left of the
//! first untrusted one could have been written by the client itself); `X-Real-IP` is used
//! when there is no `X-Forwarded-For`. The peer itself must be a trusted proxy for either
//! header to count; with no trusted ranges configured, any peer is trusted. An IPv4-mapped
//! IPv6 address (`::ffff:10.0.0.5`, what a dual-stack listener reports for an IPv4 peer) is
//! the IPv4 address it is, for the peer and for every forwarded entry.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|net| net.contains(&ip))
}

pub fn client_ip(headers: &HeaderMap, peer: IpAddr, proxies: &[IpNet], trust_forwarded_for: bool) -> IpAddr {
    if !trust_forwarded_for || (!proxies.is_empty() && !trusted(peer, proxies)) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    if let Some(ip) = forwarded.iter().rev().find(|ip| !trusted(**ip, proxies)) {
        return *ip;
    }
    if let Some(first) = forwarded.first() {
        // Every entry is a trusted proxy: the left-most is the closest to the client.
        return *first;
    }
    headers.get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn ignores_forwarded_headers_unless_trusted() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(&headers("203.0.113.9"), peer, &[], false), peer);
        assert_eq!(
            client_ip(&headers("203.0.113.9"), peer, &[], true),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_spoofed_left_most_entry_never_wins() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers("1.2.3.4, 198.51.100.7, 10.0.0.5");
        assert_eq!(client_ip(&h, peer, &proxies, true), "198.51.100.7".parse::<IpAddr>().unwrap());
        // An untrusted peer's headers are ignored.
        assert_eq!(
            client_ip(&h, "192.0.2.1".parse().unwrap(), &proxies, true),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    /// A dual-stack listener reports an IPv4 proxy as `::ffff:10.0.0.5`: it is still the
    /// trusted proxy, so the client it forwards is believed, and a mapped entry in the
    /// header is a proxy like its IPv4 form.
    #[test]
    fn an_ipv4_mapped_peer_or_entry_is_its_ipv4_address() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(&headers("203.0.113.9"), mapped, &proxies, true), client);
        assert_eq!(client_ip(&headers("203.0.113.9, ::ffff:10.0.0.7"), mapped, &proxies, true), client);
    }

    #[test]
    fn falls_back_to_x_real_ip_then_peer() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", "192.0.2.44".parse().unwrap());
        assert_eq!(client_ip(&h, peer, &[], true), "192.0.2.44".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&HeaderMap::new(), peer, &[], true), peer);
    }
}
