//! Which witnesses keyledger submits its checkpoints to, and how many must cosign.
//!
//! Two ways to say it (docs/operations.md, "Witnesses"): repeated `--witness
//! NAME+KEYID+VKEY=URL` flags with `--witness-quorum K`, or a C2SP
//! [tlog-policy](https://c2sp.org/tlog-policy) file. Of the policy format this supports
//! `witness NAME VKEY URL` lines, `log` lines (ignored: keyledger is the log), comments,
//! and `quorum K`, `quorum NAME` (one witness) or `quorum none`; `group` lines are refused
//! with a message naming the line, never silently weakened.
//!
//! Guarantees: every witness has a cosignature/v1 key and an `http(s)` URL without
//! credentials; no witness is listed twice; the quorum is between 1 and the number of
//! witnesses (or none). Nothing here panics on any input.

use keyledger_verify::cosignature::WitnessKey;

/// Most witnesses one server submits to (one thread each).
pub const MAX_WITNESSES: usize = 32;

/// One witness: its key and the base URL `add-checkpoint` is appended to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    pub key: WitnessKey,
    /// Base URL, without a trailing slash.
    pub url: String,
}

impl Witness {
    /// The witness's name (its vkey's name): what status, metrics and cosignatures show.
    pub fn name(&self) -> &str {
        self.key.name()
    }
}

/// How many witnesses must cosign a checkpoint before it counts as witnessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumRule {
    /// No cosignature is required (`quorum none`): witnesses are still asked.
    None,
    /// At least this many of the witnesses.
    AtLeast(usize),
    /// This witness (by index) must have cosigned (`quorum NAME`).
    Witness(usize),
}

/// The witnesses and the quorum, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessPolicy {
    witnesses: Vec<Witness>,
    quorum: QuorumRule,
}

/// Why a witness flag or policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("`{0}` is not NAME+KEYID+VKEY=URL")]
    MissingUrl(String),
    #[error("witness key `{key}`: {reason}")]
    BadKey { key: String, reason: String },
    #[error(
        "witness URL `{0}` must be an absolute http:// or https:// URL with a host, without credentials, spaces, query or fragment"
    )]
    BadUrl(String),
    #[error("witness {0} is listed twice")]
    Duplicate(String),
    #[error("a quorum of {quorum} is not between 1 and the {witnesses} witnesses configured")]
    QuorumOutOfRange { quorum: usize, witnesses: usize },
    #[error("at most {MAX_WITNESSES} witnesses are supported")]
    TooMany,
    #[error("policy line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("the policy has no `quorum` line")]
    NoQuorum,
}

fn check_url(url: &str) -> Result<String, PolicyError> {
    let bad = || PolicyError::BadUrl(url.chars().take(200).collect());
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    if url.contains(['#', '?']) {
        return Err(bad());
    }
    let uri = url.parse::<ureq::http::Uri>().map_err(|_| bad())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(bad());
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn parse_key(text: &str) -> Result<WitnessKey, PolicyError> {
    text.parse::<WitnessKey>()
        .map_err(|e| PolicyError::BadKey { key: text.chars().take(200).collect(), reason: e.to_string() })
}

impl Witness {
    /// Parses `--witness NAME+KEYID+VKEY=URL`. A vkey's base64 may end in `=`, so the URL
    /// starts after the first `=http`.
    pub fn parse_flag(text: &str) -> Result<Self, PolicyError> {
        let text = text.trim();
        let split =
            text.find("=http").ok_or_else(|| PolicyError::MissingUrl(text.chars().take(200).collect()))?;
        let (key, url) = (&text[..split], &text[split + 1..]);
        Ok(Self { key: parse_key(key)?, url: check_url(url)? })
    }
}

impl WitnessPolicy {
    /// A policy over `witnesses`; `quorum` None means all of them.
    pub fn new(witnesses: Vec<Witness>, quorum: Option<usize>) -> Result<Self, PolicyError> {
        let quorum = QuorumRule::AtLeast(quorum.unwrap_or(witnesses.len()));
        Self::checked(witnesses, quorum)
    }

    fn checked(witnesses: Vec<Witness>, quorum: QuorumRule) -> Result<Self, PolicyError> {
        if witnesses.len() > MAX_WITNESSES {
            return Err(PolicyError::TooMany);
        }
        for (i, w) in witnesses.iter().enumerate() {
            if witnesses[..i].iter().any(|v| v.name() == w.name() || v.key.public_key() == w.key.public_key())
            {
                return Err(PolicyError::Duplicate(w.key.to_string()));
            }
        }
        if let QuorumRule::AtLeast(k) = quorum
            && (k == 0 || k > witnesses.len())
        {
            return Err(PolicyError::QuorumOutOfRange { quorum: k, witnesses: witnesses.len() });
        }
        Ok(Self { witnesses, quorum })
    }

    /// Parses a tlog-policy file (see the module docs for what is supported).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut names: Vec<String> = Vec::new();
        let mut witnesses = Vec::new();
        let mut quorum = None;
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let fail = |reason: &str| PolicyError::Line { line: line_no, reason: reason.to_owned() };
            let words: Vec<&str> = line.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
            match words.as_slice() {
                [] => {}
                [first, ..] if first.starts_with('#') => {}
                ["log", ..] => {}
                ["witness", name, vkey, url] => {
                    if quorum.is_some() {
                        return Err(fail("a witness must be defined before the quorum"));
                    }
                    if *name == "none" || names.iter().any(|n| n == name) {
                        return Err(fail("the witness name is `none` or already defined"));
                    }
                    let key = parse_key(vkey).map_err(|e| fail(&e.to_string()))?;
                    let url = check_url(url).map_err(|e| fail(&e.to_string()))?;
                    names.push((*name).to_owned());
                    witnesses.push(Witness { key, url });
                }
                ["witness", _, _] => {
                    return Err(fail(
                        "keyledger submits its checkpoints to every witness, so each needs a URL",
                    ));
                }
                ["group", ..] => {
                    return Err(fail("`group` lines are not supported; use `quorum K` over plain witnesses"));
                }
                ["quorum", rule] => {
                    if quorum.is_some() {
                        return Err(fail("a second `quorum` line"));
                    }
                    quorum = Some(if *rule == "none" {
                        QuorumRule::None
                    } else if let Some(i) = names.iter().position(|n| n == rule) {
                        QuorumRule::Witness(i)
                    } else if let Ok(k) = rule.parse::<usize>()
                        && !rule.starts_with('0')
                    {
                        QuorumRule::AtLeast(k)
                    } else {
                        return Err(fail(
                            "the quorum is a number, `none` or the name of a witness defined above",
                        ));
                    });
                }
                _ => return Err(fail("not a `log`, `witness`, `group` or `quorum` line")),
            }
        }
        Self::checked(witnesses, quorum.ok_or(PolicyError::NoQuorum)?)
    }

    pub fn witnesses(&self) -> &[Witness] {
        &self.witnesses
    }

    pub fn quorum(&self) -> QuorumRule {
        self.quorum
    }

    /// Whether the witnesses at these indexes cosigning meets the quorum.
    pub fn met_by(&self, cosigned: &[usize]) -> bool {
        match self.quorum {
            QuorumRule::None => true,
            QuorumRule::AtLeast(k) => cosigned.len() >= k,
            QuorumRule::Witness(i) => cosigned.contains(&i),
        }
    }

    /// How many cosignatures the quorum asks for (0 for none).
    pub fn required(&self) -> usize {
        match self.quorum {
            QuorumRule::None => 0,
            QuorumRule::AtLeast(k) => k,
            QuorumRule::Witness(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_verify::cosignature::Cosigner;

    fn vkey(name: &str, seed: u8) -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        Cosigner::new(name, key).unwrap().witness_key().to_string()
    }

    #[test]
    fn a_witness_flag_is_a_vkey_then_a_url() {
        let key = vkey("w1.example", 1);
        let w = Witness::parse_flag(&format!("{key}=http://127.0.0.1:9/w/")).unwrap();
        assert_eq!(w.name(), "w1.example");
        assert_eq!(w.url, "http://127.0.0.1:9/w");
        for bad in [
            key.clone(),
            format!("{key}=ftp://x/"),
            format!("{key}=http://user:pw@x/"),
            format!("{key}=http://x/?a=b"),
            "nope=http://x/".to_owned(),
            format!("{}=http://x/", vkey("w1.example", 1).replace("+", "+0")),
        ] {
            assert!(Witness::parse_flag(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_parse_witnesses_and_quorum_and_refuse_groups() {
        let (a, b) = (vkey("a.example", 1), vkey("b.example", 2));
        let text =
            format!("# test\nlog x\nwitness A {a} http://a/\n  witness B\t{b} https://b/x\nquorum 1\n");
        let policy = WitnessPolicy::parse(&text).unwrap();
        assert_eq!(policy.witnesses().len(), 2);
        assert_eq!(policy.quorum(), QuorumRule::AtLeast(1));
        let named =
            WitnessPolicy::parse(&format!("witness A {a} http://a/\nwitness B {b} http://b/\nquorum B\n"))
                .unwrap();
        assert_eq!(named.quorum(), QuorumRule::Witness(1));
        assert!(named.met_by(&[1]) && !named.met_by(&[0]));
        let none = WitnessPolicy::parse(&format!("witness A {a} http://a/\nquorum none\n")).unwrap();
        assert!(none.met_by(&[]));
        let group = format!("witness A {a} http://a/\ngroup G any A\nquorum G\n");
        assert!(matches!(WitnessPolicy::parse(&group), Err(PolicyError::Line { line: 2, .. })));
        for bad in [
            format!("witness A {a} http://a/\nquorum 3\n"),
            format!("witness A {a} http://a/\nquorum 0\n"),
            format!("witness A {a} http://a/\n"),
            format!("witness A {a}\nquorum 1\n"),
            format!("witness A {a} http://a/\nwitness A {b} http://b/\nquorum 1\n"),
            format!("witness A {a} http://a/\nwitness B {a} http://b/\nquorum 1\n"),
            "frobnicate\nquorum none\n".to_owned(),
        ] {
            assert!(WitnessPolicy::parse(&bad).is_err(), "{bad}");
        }
        assert!(WitnessPolicy::new(vec![], None).is_err());
    }
}
