//! The body of a tlog-witness `add-checkpoint` request, parsed strictly.
//!
//! ```text
//! old <size>\n
//! <base64 hash>\n        (0 to 63 consistency proof lines)
//! \n
//! <checkpoint note: text, blank line, signature lines>
//! ```
//!
//! Anything else is [`MalformedRequest`] (HTTP 400): a size that is not canonical decimal,
//! a proof line that is not standard padded base64 of 32 bytes, more than
//! [`MAX_PROOF_LINES`] lines, a body that is not UTF-8 or larger than [`MAX_REQUEST_BYTES`].
//! The note itself is parsed later, by the verifier crate's one note parser.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyledger_verify::merkle::Hash;

/// Largest request body accepted (64 KiB): 63 proof lines and a checkpoint with many
/// signature lines fit with room to spare.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// Most consistency proof lines a request may carry (the spec's limit).
pub const MAX_PROOF_LINES: usize = 63;

/// Why a request body is not an `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed add-checkpoint request: {0}")]
pub struct MalformedRequest(pub &'static str);

/// A parsed `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint<'a> {
    /// The size of the latest checkpoint the client believes the witness cosigned.
    pub old_size: u64,
    /// The consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub note: &'a str,
}

impl<'a> AddCheckpoint<'a> {
    /// Parses a request body.
    ///
    /// # Errors
    ///
    /// [`MalformedRequest`] naming the first problem found.
    pub fn parse(body: &'a [u8]) -> Result<Self, MalformedRequest> {
        let bad = MalformedRequest;
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad("the body is larger than 64 KiB"));
        }
        let body = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
        // The old size and proof lines are never empty, so the first blank line ends them.
        let split = body.find("\n\n").ok_or(bad("no blank line before the checkpoint"))?;
        // `split` is the index of an ASCII newline, so both slices are on char boundaries.
        let (head, note) = (&body[..split], &body[split + 2..]);
        let mut lines = head.split('\n');
        let old_line = lines.next().unwrap_or_default();
        let old = old_line.strip_prefix("old ").ok_or(bad("the first line is not `old <size>`"))?;
        let old_size = parse_decimal(old).ok_or(bad("the old size is not a canonical decimal number"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let hash = STANDARD
                .decode(line)
                .ok()
                .and_then(|raw| Hash::try_from(raw).ok())
                .ok_or(bad("a consistency proof line is not a base64 32-byte hash"))?;
            proof.push(hash);
        }
        if note.is_empty() {
            return Err(bad("no checkpoint after the blank line"));
        }
        Ok(Self { old_size, proof, note })
    }
}

/// ASCII decimal with no sign and no leading zero (except `0`), fitting in a `u64`.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The tlog-witness spec's example request body, byte for byte.
    const SPEC_REQUEST: &str = "old 20852014\n\
        PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
        jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
        5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
        /6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
        \n\
        example.com/behind-the-sofa\n\
        20852163\n\
        CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
        \n\
        \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
        \u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n";

    #[test]
    fn parses_the_spec_example() {
        let req = AddCheckpoint::parse(SPEC_REQUEST.as_bytes()).unwrap();
        assert_eq!(req.old_size, 20_852_014);
        assert_eq!(req.proof.len(), 4);
        assert_eq!(STANDARD.encode(req.proof[3]), "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=");
        assert!(req.note.starts_with("example.com/behind-the-sofa\n20852163\n"));
        assert!(req.note.ends_with("qbSzm9Q=\n"));
    }

    #[test]
    fn rejects_malformed_bodies() {
        let note = "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} o AAAA\n";
        let hash = "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=";
        assert!(AddCheckpoint::parse(format!("old 0\n\n{note}").as_bytes()).is_ok());
        let many = format!("old 1\n{}\n{note}", format!("{hash}\n").repeat(64));
        let just_enough = format!("old 1\n{}\n{note}", format!("{hash}\n").repeat(63));
        assert_eq!(AddCheckpoint::parse(just_enough.as_bytes()).unwrap().proof.len(), 63);
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"old 0\n".to_vec(),
            b"old 0\n\n".to_vec(),
            format!("old 00\n\n{note}").into(),
            format!("old 01\n\n{note}").into(),
            format!("old -1\n\n{note}").into(),
            format!("old +1\n\n{note}").into(),
            format!("old  1\n\n{note}").into(),
            format!("old 18446744073709551616\n\n{note}").into(),
            format!("Old 1\n\n{note}").into(),
            format!("old 1\r\n\n{note}").into(),
            format!("\nold 1\n\n{note}").into(),
            format!("old 1\nAAAA\n\n{note}").into(),
            format!("old 1\n{}\n\n{note}", hash.trim_end_matches('=')).into(),
            format!("old 1\n {hash}\n\n{note}").into(),
            many.into(),
            [b"old 1\n\n".as_slice(), &[0xff, 0xfe], note.as_bytes()].concat(),
            format!("old 0\n\n{}{note}", "x".repeat(MAX_REQUEST_BYTES)).into(),
        ];
        for (i, case) in cases.iter().enumerate() {
            assert!(AddCheckpoint::parse(case).is_err(), "case {i}: {:?}", String::from_utf8_lossy(case));
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), s in "(old [0-9]{0,3}\n)?[A-Za-z0-9+/=\n]{0,80}") {
            let _ = AddCheckpoint::parse(&bytes);
            let _ = AddCheckpoint::parse(s.as_bytes());
        }
    }
}
