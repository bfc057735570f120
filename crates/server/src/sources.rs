//! Source allow-lists on the HTTP surface (docs/api.md, "Source allow-lists"): parsing the
//! `allowed_sources` of request bodies, which address a verification is checked against,
//! and the policy's view of them.
//!
//! It exists so that the create, update, policy and verify handlers each call one function
//! instead of carrying the rules themselves. **Guarantees:** a bad entry answers 400
//! `invalid_request` naming `allowed_sources` (never echoing a secret pasted in its place);
//! in JSON mode the caller's `context.ip` is checked only when the caller itself is a
//! trusted proxy (`--trusted-proxy`), otherwise its own address is (docs/gateways.md,
//! "Trusted proxies").

use crate::error::ApiError;
use crate::schema::PolicyView;
use ipnet::IpNet;
use keyledger_core::sources::{SourceError, parse_sources};
use keyledger_core::{SourceNet, Timestamp, WorkspaceId};
use keyledger_ledger::LedgerState;
use keyledger_ledger::state::SourcePolicy;
use std::net::IpAddr;

/// Most exception key ids a policy view lists (their count is always given).
pub const MAX_EXCEPTIONS_SHOWN: usize = 100;

/// Parses a body's `allowed_sources` (field `field`): IP addresses and CIDR networks, at
/// most `MAX_SOURCES`.
pub fn parse_list(field: &str, list: &[String]) -> Result<Vec<SourceNet>, ApiError> {
    // An entry is named by its place, never repeated: it may be a secret in the wrong field.
    let place = |text: &str| list.iter().position(|entry| entry.contains(text)).map_or(0, |at| at + 1);
    parse_sources(list).map_err(|error| match error {
        SourceError::Malformed(text) => ApiError::invalid(
            field,
            format!(
                "has an entry (number {}) that is not an IP address or CIDR network (e.g. 10.0.0.0/8, 2001:db8::/32)",
                place(&text)
            ),
        ),
        SourceError::PrefixTooLong(text) => ApiError::invalid(
            field,
            format!("has an entry (number {}) whose prefix length is too long", place(&text)),
        ),
        SourceError::TooMany => ApiError::invalid(field, error.to_string()),
    })
}

/// Whether `peer` is a trusted proxy: inside a configured `--trusted-proxy` range. With
/// none configured, no caller is (unlike forward-auth's `--trust-forwarded-for` alone, a
/// JSON body's address is never believed from just anyone).
pub fn is_trusted_proxy(peer: IpAddr, proxies: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    proxies.iter().any(|net| net.contains(&peer))
}

/// The address a verification's allow-list check uses: the `stated` one (JSON mode's
/// `context.ip`) from a trusted proxy, otherwise `client`, the address verify determines
/// for every request (the peer, or the forwarded client behind `--trust-forwarded-for`).
pub fn checked_source(peer: IpAddr, proxies: &[IpNet], stated: Option<IpAddr>, client: IpAddr) -> IpAddr {
    match stated {
        Some(stated) if is_trusted_proxy(peer, proxies) => stated,
        _ => client,
    }
}

/// A policy body's source fields as the engine takes them.
pub fn policy(default_sources: &[String], require: bool) -> Result<SourcePolicy, ApiError> {
    Ok(SourcePolicy {
        default_sources: parse_list("allowed_sources", default_sources)?,
        require_on_live: require,
    })
}

/// `view` with the workspace's source policy and its exceptions (live `live` keys without a
/// list: keys issued before `require_allowed_sources` was set).
pub fn with_policy(mut view: PolicyView, registry: &LedgerState, workspace: &WorkspaceId) -> PolicyView {
    let policy = registry.source_policy(workspace);
    let (ids, count) =
        keyledger_ledger::sources::exceptions(registry, workspace, Timestamp::now(), MAX_EXCEPTIONS_SHOWN);
    view.allowed_sources = policy.default_sources.iter().map(ToString::to_string).collect();
    view.require_allowed_sources = policy.require_on_live;
    view.allowed_sources_exceptions = ids.iter().map(ToString::to_string).collect();
    view.allowed_sources_exception_count = count as u64;
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stated_address_counts_only_from_a_trusted_proxy() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let stated: IpAddr = "203.0.113.9".parse().unwrap();
        let gateway: IpAddr = "10.0.0.7".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(checked_source(gateway, &proxies, Some(stated), gateway), stated);
        assert_eq!(checked_source(stranger, &proxies, Some(stated), stranger), stranger);
        assert_eq!(
            checked_source(gateway, &[], Some(stated), gateway),
            gateway,
            "no range: nobody is trusted"
        );
        assert_eq!(checked_source(gateway, &proxies, None, gateway), gateway);
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(checked_source(mapped, &proxies, Some(stated), mapped), stated, "a dual-stack peer");
    }

    #[test]
    fn bad_entries_name_the_field_and_never_echo_a_secret() {
        let message = |list: &[&str]| {
            let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            parse_list("allowed_sources", &list).unwrap_err().message
        };
        assert!(message(&["10.0.0.0/33"]).starts_with("`allowed_sources`"));
        assert!(
            message(&["10.0.0.1", "nope"]).contains("entry (number 2)"),
            "{}",
            message(&["10.0.0.1", "nope"])
        );
        let secret = keyledger_core::Secret::generate(
            &keyledger_core::KeyPrefix::default_prefix(),
            keyledger_core::Environment::Live,
        )
        .unwrap();
        let foreign = "sk_prod_6bN3xQ9vT2mK8pL5wR7yZ4cJ1hF0dG";
        for value in [secret.expose(), foreign] {
            assert!(!message(&[value]).contains(value), "{}", message(&[value]));
        }
        assert_eq!(
            parse_list("allowed_sources", &["10.1.0.0/8".into()]).unwrap()[0].to_string(),
            "10.0.0.0/8"
        );
    }
}
