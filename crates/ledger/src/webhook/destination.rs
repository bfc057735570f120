//! Where a webhook may be delivered (`docs/security.md`, "Webhook destinations").
//!
//! A workspace admin chooses the webhook URL, and keyledger connects to it from inside the
//! operator's network. Without a rule, that admin could make keyledger POST to the host's
//! loopback services, the private network or a cloud metadata endpoint, and read from the
//! deliveries list which internal ports answer. So, unless the operator allows private
//! destinations (`--webhook-allow-private`), an address is refused when it is loopback,
//! private (RFC 1918, CGNAT 100.64/10, unique-local fc00::/7, site-local fec0::/10),
//! link-local, documentation or benchmarking space, or the IPv4 address embedded in an
//! IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64 or 6to4 IPv6 address that would be
//! refused. Whatever the operator allows, keyledger never delivers to an unspecified,
//! multicast, broadcast or reserved address, to a Teredo (2001::/32) or local-use NAT64
//! (64:ff9b:1::/48) address, whose IPv4 destination cannot be checked, nor to a cloud
//! metadata endpoint (169.254.169.254, fd00:ec2::254, 100.100.100.200,
//! `metadata.google.internal`).
//!
//! The rule is checked twice: on the URL when a webhook is configured (literal addresses
//! and the metadata names; no DNS lookup on the request path), and by the sender on every
//! address a name resolves to, right before connecting, through [`GuardedResolver`]: the
//! address checked is the address connected to, so a name that resolves elsewhere later
//! (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// Host names of cloud metadata services, refused whatever the operator allows.
pub const METADATA_HOSTS: [&str; 2] = ["metadata.google.internal", "metadata.goog"];

/// Addresses of cloud metadata services (AWS, GCP, Azure, OpenStack; AWS over IPv6;
/// Alibaba Cloud), refused whatever the operator allows.
const METADATA_ADDRESSES: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// Why a destination is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Loopback, private, link-local, documentation or benchmarking space: allowed only with
    /// `--webhook-allow-private`.
    #[error(
        "is an internal address (loopback, private or link-local); deliveries to the internal network need `--webhook-allow-private` on the server"
    )]
    Internal,
    /// A cloud metadata endpoint: never allowed.
    #[error("is a cloud metadata endpoint")]
    Metadata,
    /// Unspecified, multicast, broadcast or reserved: not a destination at all.
    #[error("is not a unicast destination address")]
    NotUnicast,
    /// Teredo or local-use NAT64: the IPv4 address it reaches cannot be checked (obfuscated,
    /// or placed where the operator's prefix length says): never allowed.
    #[error("is a tunnelled IPv6 address (Teredo or local-use NAT64) whose destination cannot be checked")]
    Tunnel,
}

/// What the sender may connect to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestinationRule {
    /// Allow loopback, private and link-local destinations (`--webhook-allow-private`).
    pub allow_private: bool,
}

impl DestinationRule {
    /// Checks one address.
    pub fn check_ip(self, ip: IpAddr) -> Result<(), Refusal> {
        match classify(ip) {
            None => Ok(()),
            Some(Refusal::Internal) if self.allow_private => Ok(()),
            Some(refusal) => Err(refusal),
        }
    }

    /// Checks the host of a URL as written: a literal address by [`Self::check_ip`], a
    /// metadata name always; any other name passes here and is checked on the addresses it
    /// resolves to when connecting. Brackets of an IPv6 literal are accepted.
    pub fn check_host(self, host: &str) -> Result<(), Refusal> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        let name = bare.trim_end_matches('.');
        if METADATA_HOSTS.iter().any(|m| name.eq_ignore_ascii_case(m)) {
            return Err(Refusal::Metadata);
        }
        Ok(())
    }
}

/// The class of refusal of an address under the default rule, `None` if it is allowed.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    if METADATA_ADDRESSES.contains(&IpAddr::V4(ip)) {
        return Some(Refusal::Metadata);
    }
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network", 0.0.0.0/8
        || a >= 240
    // reserved, 240.0.0.0/4
    {
        return Some(Refusal::NotUnicast);
    }
    let internal = ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_documentation()
        || (a == 100 && (b & 0xc0) == 64) // shared address space (CGNAT), 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments, 192.0.0.0/24
        || (a == 198 && (b & 0xfe) == 18); // benchmarking, 198.18.0.0/15
    internal.then_some(Refusal::Internal)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    if METADATA_ADDRESSES.contains(&IpAddr::V6(ip)) {
        return Some(Refusal::Metadata);
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Some(Refusal::NotUnicast);
    }
    if ip.is_loopback() {
        return Some(Refusal::Internal);
    }
    let s = ip.segments();
    let teredo = s[0] == 0x2001 && s[1] == 0; // 2001::/32
    let local_nat64 = s[..3] == [0x64, 0xff9b, 1]; // 64:ff9b:1::/48
    if teredo || local_nat64 {
        return Some(Refusal::Tunnel);
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let internal = ip.is_unique_local() // fc00::/7
        || ip.is_unicast_link_local() // fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation, 2001:db8::/32
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0); // discard-only, 100::/64
    internal.then_some(Refusal::Internal)
}

/// The IPv4 address an IPv6 address stands for or routes to: IPv4-mapped (::ffff:0:0/96),
/// IPv4-translated (::ffff:0:0:0/96), IPv4-compatible (::/96, deprecated), NAT64
/// (64:ff9b::/96) and 6to4 (2002::/16). Teredo and local-use NAT64 are refused before this
/// is asked (see [`Refusal::Tunnel`]).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] || s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The marker error of a connection refused by the rule, so that the attempt is recorded as
/// "refused destination" (see `service::transport_error`).
#[derive(Debug, thiserror::Error)]
#[error("refused destination")]
pub struct RefusedDestination;

/// ureq's resolver, keeping only the addresses the rule allows. ureq connects only to what
/// the resolver returns (the sender has no proxy and follows no redirect), so no refused
/// address is ever connected to. A name with no allowed address fails with
/// [`RefusedDestination`].
///
/// ureq's resolver interface is outside its semver promise ("unversioned"): an upgrade that
/// changes it fails to compile here rather than silently skipping the check.
#[derive(Debug)]
pub struct GuardedResolver {
    rule: DestinationRule,
    inner: DefaultResolver,
}

impl GuardedResolver {
    pub fn new(rule: DestinationRule) -> Self {
        Self { rule, inner: DefaultResolver::default() }
    }
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let Some(host) = uri.host()
            && self.rule.check_host(host).is_err()
        {
            return Err(ureq::Error::Other(Box::new(RefusedDestination)));
        }
        let resolved = self.inner.resolve(uri, config, timeout)?;
        let mut allowed = self.empty();
        for address in resolved.iter().filter(|a| self.rule.check_ip(a.ip()).is_ok()) {
            allowed.push(*address);
        }
        if allowed.is_empty() {
            return Err(ureq::Error::Other(Box::new(RefusedDestination)));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: DestinationRule = DestinationRule { allow_private: false };
    const OPEN: DestinationRule = DestinationRule { allow_private: true };

    /// (address, allowed by default, allowed with `--webhook-allow-private`)
    const TABLE: &[(&str, bool, bool)] = &[
        // Public unicast.
        ("93.184.215.14", true, true),
        ("8.8.8.8", true, true),
        ("1.1.1.1", true, true),
        ("100.63.255.255", true, true),
        ("100.128.0.0", true, true),
        ("172.32.0.1", true, true),
        ("192.0.1.1", true, true),
        ("198.20.0.1", true, true),
        ("2606:4700:4700::1111", true, true),
        ("2a00:1450:4001:82a::200e", true, true),
        ("::ffff:8.8.8.8", true, true),
        ("64:ff9b::808:808", true, true),
        ("2002:808:808::1", true, true),
        // Loopback.
        ("127.0.0.1", false, true),
        ("127.255.255.254", false, true),
        ("::1", false, true),
        ("::ffff:127.0.0.1", false, true),
        ("::127.0.0.1", false, true),
        ("64:ff9b::7f00:1", false, true),
        ("2002:7f00:1::", false, true),
        // Private, CGNAT, unique- and site-local.
        ("10.0.0.1", false, true),
        ("172.16.0.1", false, true),
        ("172.31.255.255", false, true),
        ("192.168.1.1", false, true),
        ("100.64.0.1", false, true),
        ("100.127.255.254", false, true),
        ("::ffff:10.1.2.3", false, true),
        ("::ffff:192.168.0.1", false, true),
        ("fd00::1", false, true),
        ("fc00::1", false, true),
        ("fec0::1", false, true),
        // Link-local.
        ("169.254.0.1", false, true),
        ("fe80::1", false, true),
        ("::ffff:169.254.1.1", false, true),
        // Documentation, benchmarking, protocol assignments, discard-only.
        ("192.0.2.1", false, true),
        ("198.51.100.7", false, true),
        ("203.0.113.9", false, true),
        ("198.18.0.1", false, true),
        ("198.19.255.255", false, true),
        ("192.0.0.8", false, true),
        ("2001:db8::1", false, true),
        ("100::1", false, true),
        // Cloud metadata: never.
        ("169.254.169.254", false, false),
        ("::ffff:169.254.169.254", false, false),
        ("fd00:ec2::254", false, false),
        ("100.100.100.200", false, false),
        // Not unicast: never.
        ("0.0.0.0", false, false),
        ("0.1.2.3", false, false),
        ("255.255.255.255", false, false),
        ("224.0.0.1", false, false),
        ("240.0.0.1", false, false),
        ("::", false, false),
        ("ff02::1", false, false),
        ("::ffff:0.0.0.0", false, false),
        ("::ffff:224.0.0.1", false, false),
        // IPv4-translated (::ffff:0:0:0/96): the embedded address decides.
        ("::ffff:0:808:808", true, true),
        ("::ffff:0:127.0.0.1", false, true),
        ("::ffff:0:10.0.0.1", false, true),
        ("::ffff:0:169.254.169.254", false, false),
        // Local-use NAT64 (64:ff9b:1::/48) and Teredo (2001::/32): where the IPv4 address
        // they reach sits depends on the operator's prefix or is obfuscated: never.
        ("64:ff9b:1::808:808", false, false),
        ("64:ff9b:1::7f00:1", false, false),
        ("64:ff9b:1:7f00:0:100::", false, false),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", false, false),
        ("2001::1", false, false),
        // A neighbour of Teredo stays public.
        ("2001:4860:4860::8888", true, true),
    ];

    #[test]
    fn every_address_class_is_classified() {
        for (text, by_default, with_flag) in TABLE {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(STRICT.check_ip(ip).is_ok(), *by_default, "{text} by default");
            assert_eq!(OPEN.check_ip(ip).is_ok(), *with_flag, "{text} with --webhook-allow-private");
        }
    }

    #[test]
    fn hosts_are_checked_as_written() {
        assert_eq!(STRICT.check_host("[::1]"), Err(Refusal::Internal));
        assert_eq!(STRICT.check_host("[::ffff:127.0.0.1]"), Err(Refusal::Internal));
        assert_eq!(STRICT.check_host("127.0.0.1"), Err(Refusal::Internal));
        assert_eq!(OPEN.check_host("[::1]"), Ok(()));
        for metadata in ["metadata.google.internal", "METADATA.google.internal.", "metadata.goog"] {
            assert_eq!(OPEN.check_host(metadata), Err(Refusal::Metadata), "{metadata}");
        }
        assert_eq!(OPEN.check_host("169.254.169.254"), Err(Refusal::Metadata));
        // Names are checked when connecting, on what they resolve to.
        assert_eq!(STRICT.check_host("example.com"), Ok(()));
        assert_eq!(STRICT.check_host("localhost"), Ok(()));
    }

    fn resolve(rule: DestinationRule, url: &str) -> Result<Vec<std::net::SocketAddr>, ureq::Error> {
        let uri: ureq::http::Uri = url.parse().unwrap();
        let config = ureq::config::Config::default();
        GuardedResolver::new(rule)
            .resolve(&uri, &config, NextTimeout::default())
            .map(|addrs| addrs.iter().copied().collect())
    }

    #[test]
    fn the_resolver_returns_only_allowed_addresses() {
        let refused = |result: Result<_, ureq::Error>| matches!(result, Err(ureq::Error::Other(e)) if e.is::<RefusedDestination>());
        // `localhost` and the decimal form of 127.0.0.1 both resolve to loopback.
        assert!(refused(resolve(STRICT, "http://localhost:8080/")));
        assert!(refused(resolve(STRICT, "http://2130706433:8080/")));
        assert!(refused(resolve(STRICT, "http://127.0.0.1:8080/")));
        assert!(refused(resolve(OPEN, "http://169.254.169.254/")));
        let allowed = resolve(OPEN, "http://127.0.0.1:8080/").unwrap();
        assert_eq!(allowed, ["127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap()]);
        let public = resolve(STRICT, "https://93.184.215.14/").unwrap();
        assert_eq!(public, ["93.184.215.14:443".parse::<std::net::SocketAddr>().unwrap()]);
    }
}
