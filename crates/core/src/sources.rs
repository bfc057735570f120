//! Source allow-lists: the IP addresses and CIDR networks a key may be verified from.
//!
//! This module exists so that the log, the sequencer, the server and the offline verifier
//! share one definition of "this address is allowed" (docs/api.md, "Source allow-lists").
//! It performs no I/O. **Guarantees:** a [`SourceNet`] is always normalised (host bits
//! zero, IPv4-mapped IPv6 networks stored as the IPv4 network they denote), so equal
//! networks encode to equal bytes; [`SourceNet::contains`] treats an IPv4-mapped IPv6
//! address (`::ffff:10.0.0.1`, what a dual-stack listener reports) as the IPv4 address it
//! is; a list never holds more than [`MAX_SOURCES`] networks.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Most networks one allow-list may hold.
pub const MAX_SOURCES: usize = 64;

/// One IP network (`10.0.0.0/8`, `2001:db8::/32`) or address (a full-length network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a source network was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("`{0}` is not an IP address or CIDR network (e.g. 10.0.0.0/8, 2001:db8::/32)")]
    Malformed(String),
    #[error("the prefix length of `{0}` is too long for its address family")]
    PrefixTooLong(String),
    #[error("at most {MAX_SOURCES} sources may be given")]
    TooMany,
}

fn mask_v4(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let bits = u32::from(addr);
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(bits & mask)
}

fn mask_v6(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from(bits & mask)
}

impl SourceNet {
    /// The network of `addr` with `prefix` bits, normalised (see the module docs).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, SourceError> {
        match addr {
            IpAddr::V4(v4) if prefix <= 32 => Ok(Self { addr: IpAddr::V4(mask_v4(v4, prefix)), prefix }),
            IpAddr::V6(v6) if prefix <= 128 => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Self::new(IpAddr::V4(v4), prefix - 96),
                _ => Ok(Self { addr: IpAddr::V6(mask_v6(v6, prefix)), prefix }),
            },
            _ => Err(SourceError::PrefixTooLong(format!("{addr}/{prefix}"))),
        }
    }

    /// The one-address network of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        match Self::new(addr, prefix) {
            Ok(net) => net,
            // Unreachable: a full-length prefix always fits its family.
            Err(_) => Self { addr, prefix: 0 },
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, self.prefix) == net,
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, self.prefix) == net,
            _ => false,
        }
    }

    /// Whether every address of `other` is in this network.
    pub fn covers(&self, other: &SourceNet) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl FromStr for SourceNet {
    type Err = SourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || SourceError::Malformed(text.chars().take(64).collect());
        match text.split_once('/') {
            None => text.parse::<IpAddr>().map(Self::host).map_err(|_| malformed()),
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| malformed())?;
                // Digits only: `u8::from_str` would also take a leading `+`.
                if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed());
                }
                let prefix: u8 = prefix.parse().map_err(|_| malformed())?;
                Self::new(addr, prefix)
            }
        }
    }
}

/// A full-length network is shown as its bare address; any other as `addr/prefix`.
impl fmt::Display for SourceNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Parses and normalises an allow-list: at most [`MAX_SOURCES`] entries, sorted, without
/// duplicates (so that equal lists encode alike).
pub fn parse_sources<S: AsRef<str>>(texts: &[S]) -> Result<Vec<SourceNet>, SourceError> {
    if texts.len() > MAX_SOURCES {
        return Err(SourceError::TooMany);
    }
    let mut nets = texts.iter().map(|t| t.as_ref().trim().parse()).collect::<Result<Vec<SourceNet>, _>>()?;
    nets.sort();
    nets.dedup();
    Ok(nets)
}

/// Whether `source` may use a key restricted to `allowed` (empty = unrestricted). An
/// unknown source is never allowed by a non-empty list: the check fails closed.
pub fn source_allowed(allowed: &[SourceNet], source: Option<IpAddr>) -> bool {
    allowed.is_empty() || source.is_some_and(|ip| allowed.iter().any(|net| net.contains(ip)))
}

/// Whether `narrower` allows nothing that `wider` does not (empty = unrestricted).
pub fn is_narrowing(wider: &[SourceNet], narrower: &[SourceNet]) -> bool {
    wider.is_empty() || (!narrower.is_empty() && narrower.iter().all(|n| wider.iter().any(|w| w.covers(n))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> SourceNet {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_networks_and_addresses() {
        let n = net("10.0.0.0/8");
        assert!(n.contains(ip("10.1.2.3")) && n.contains(ip("10.255.255.255")));
        assert!(!n.contains(ip("11.0.0.0")) && !n.contains(ip("9.255.255.255")));
        assert_eq!(net("10.1.2.3/8"), n, "host bits are cleared");
        assert_eq!(n.to_string(), "10.0.0.0/8");
        let host = net("192.0.2.7");
        assert_eq!(host.to_string(), "192.0.2.7");
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")), "an IPv4 network holds no IPv6 address");
    }

    #[test]
    fn ipv6_networks() {
        let n = net("2001:db8::/32");
        assert!(n.contains(ip("2001:db8:1::5")));
        assert!(!n.contains(ip("2001:db9::1")));
        assert!(!n.contains(ip("10.0.0.1")));
        assert_eq!(net("2001:db8:ffff::1/32").to_string(), "2001:db8::/32");
        assert_eq!(net("::1").to_string(), "::1");
        assert!(net("::/0").contains(ip("fe80::1")));
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.9.8.7")));
        assert!(!net("10.0.0.0/8").contains(ip("::ffff:11.0.0.1")));
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert_eq!(net("::ffff:192.0.2.1"), net("192.0.2.1"));
        assert!(net("::ffff:192.0.2.1").contains(ip("192.0.2.1")));
    }

    #[test]
    fn bad_input_is_refused() {
        for bad in [
            "",
            "/",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/08x",
            "10.0.0",
            "host",
            "10.0.0.0/8/8",
            "1.2.3.4/-1",
            "10.0.0.0/0008",
        ] {
            assert!(bad.parse::<SourceNet>().is_err(), "{bad:?} must be refused");
        }
        assert!(matches!("10.0.0.0/33".parse::<SourceNet>(), Err(SourceError::PrefixTooLong(_))));
        let too_many: Vec<String> = (0..=MAX_SOURCES).map(|i| format!("10.0.{i}.0/24")).collect();
        assert_eq!(parse_sources(&too_many), Err(SourceError::TooMany));
    }

    #[test]
    fn lists_are_sorted_deduplicated_and_fail_closed() {
        let list = parse_sources(&["10.0.0.0/8", " 192.0.2.1 ", "10.1.0.0/8"]).unwrap();
        assert_eq!(list, vec![net("10.0.0.0/8"), net("192.0.2.1")]);
        assert!(source_allowed(&[], None), "no list: any source, even an unknown one");
        assert!(!source_allowed(&list, None), "a list refuses an unknown source");
        assert!(source_allowed(&list, Some(ip("10.3.3.3"))));
        assert!(!source_allowed(&list, Some(ip("192.0.2.2"))));
    }

    #[test]
    fn narrowing() {
        let wide = parse_sources(&["10.0.0.0/8"]).unwrap();
        let narrow = parse_sources(&["10.1.0.0/16", "10.2.3.4"]).unwrap();
        assert!(is_narrowing(&[], &wide), "restricting an unrestricted key narrows it");
        assert!(is_narrowing(&wide, &narrow));
        assert!(is_narrowing(&wide, &wide));
        assert!(!is_narrowing(&narrow, &wide));
        assert!(!is_narrowing(&wide, &[]), "removing the list widens");
        assert!(!is_narrowing(&wide, &parse_sources(&["10.0.0.0/8", "11.0.0.1"]).unwrap()));
    }
}
