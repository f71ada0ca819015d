//! A witness policy: which witnesses' cosignatures count, and how many a
//! checkpoint needs. The policy file is text, one directive a line:
//!
//! ```text
//! # comments and blank lines are ignored
//! witness w1.example/witness+1a2b3c4d+BJ…   a witness's verifier key (type 0x04)
//! witness w2.example/witness+5e6f7a8b+BK…
//! quorum 2                                   at least this many must have cosigned
//! ```
//!
//! Without a `quorum` line every listed witness must have cosigned.

use serde::Serialize;

use crate::hash::note::SignedNote;
use crate::witness::cosignature::CosignatureVerifier;
use crate::witness::WitnessError;

/// The most witnesses a policy lists.
pub const MAX_POLICY_WITNESSES: usize = 64;

/// Which witnesses count and how many must have cosigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessPolicy {
    /// The witnesses' keys.
    pub witnesses: Vec<CosignatureVerifier>,
    /// How many of them must have cosigned.
    pub quorum: usize,
}

/// One valid cosignature found by [`WitnessPolicy::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cosigned {
    /// The witness's verifier key.
    pub witness: String,
    /// When it cosigned (POSIX seconds).
    pub timestamp: u64,
}

/// What [`WitnessPolicy::check`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyReport {
    /// The witnesses of the policy that cosigned, in policy order.
    pub cosigned: Vec<Cosigned>,
    /// The policy's quorum.
    pub quorum: usize,
}

impl WitnessPolicy {
    /// A policy of `witnesses` with `quorum` (1 to their number).
    pub fn new(witnesses: Vec<CosignatureVerifier>, quorum: usize) -> Result<Self, WitnessError> {
        let bad = |why: String| WitnessError::Policy { line: 0, why };
        if witnesses.is_empty() || witnesses.len() > MAX_POLICY_WITNESSES {
            return Err(bad(format!(
                "a policy lists 1 to {MAX_POLICY_WITNESSES} witnesses"
            )));
        }
        if quorum == 0 || quorum > witnesses.len() {
            return Err(bad(format!(
                "quorum {quorum} with {} witnesses: it must be between 1 and their number",
                witnesses.len()
            )));
        }
        for (i, w) in witnesses.iter().enumerate() {
            if witnesses[..i]
                .iter()
                .any(|o| o.name() == w.name() && o.id() == w.id())
            {
                return Err(bad(format!("witness {} is listed twice", w.to_text())));
            }
        }
        Ok(WitnessPolicy { witnesses, quorum })
    }

    /// Parses a policy file's text.
    pub fn parse(text: &str) -> Result<Self, WitnessError> {
        let mut witnesses = Vec::new();
        let mut quorum = None;
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let bad = |why: String| WitnessError::Policy { line: line_no, why };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (directive, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let value = value.trim();
            match directive {
                "witness" => witnesses
                    .push(CosignatureVerifier::parse(value).map_err(|e| bad(e.to_string()))?),
                "quorum" if quorum.is_some() => return Err(bad("a second quorum line".into())),
                "quorum" => {
                    quorum = Some(
                        value
                            .parse::<usize>()
                            .map_err(|_| bad(format!("quorum {value:?} is not a number")))?,
                    )
                }
                other => {
                    return Err(bad(format!(
                        "unknown directive {other:?} (expected `witness` or `quorum`)"
                    )))
                }
            }
        }
        let quorum = quorum.unwrap_or(witnesses.len());
        WitnessPolicy::new(witnesses, quorum)
    }

    /// Checks a signed note's cosignatures against the policy. Signatures by
    /// keys outside the policy are ignored; a cosignature by a listed key
    /// that does not verify fails the whole note (C2SP signed-note asks for
    /// that), as do fewer valid cosigners than the quorum. The log's own
    /// signature is not checked here.
    pub fn check(&self, note: &str) -> Result<PolicyReport, WitnessError> {
        let note = SignedNote::parse(note).map_err(WitnessError::Note)?;
        let mut cosigned = Vec::new();
        for witness in &self.witnesses {
            let mut newest = None;
            for sig in note.signatures.iter().filter(|s| witness.is_signer_of(s)) {
                let t = witness.verify(&note.text, sig)?;
                newest = Some(newest.map_or(t, |n: u64| n.max(t)));
            }
            if let Some(timestamp) = newest {
                cosigned.push(Cosigned {
                    witness: witness.to_text(),
                    timestamp,
                });
            }
        }
        if cosigned.len() < self.quorum {
            return Err(WitnessError::QuorumNotMet {
                valid: cosigned.len(),
                required: self.quorum,
            });
        }
        Ok(PolicyReport {
            cosigned,
            quorum: self.quorum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::note::SignedNote;
    use crate::witness::cosignature::Cosigner;

    const TEXT: &str = "example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

    fn cosigners() -> Vec<Cosigner> {
        (1..=3)
            .map(|i| Cosigner::from_seed(&format!("w{i}.example"), [i; 32]).unwrap())
            .collect()
    }

    fn policy_text(quorum: Option<usize>) -> String {
        let mut text = String::from("# three witnesses\n\n");
        for c in cosigners() {
            text.push_str(&format!("witness {}\n", c.verifier().to_text()));
        }
        if let Some(q) = quorum {
            text.push_str(&format!("quorum {q}\n"));
        }
        text
    }

    /// The note signed by a log key and cosigned by the first `n` witnesses.
    fn note(n: usize) -> String {
        let mut note =
            SignedNote::parse(&format!("{TEXT}\n\u{2014} log.example AAAAAQID\n")).unwrap();
        for c in cosigners().iter().take(n) {
            note.add(c.cosign(TEXT, 1_700_000_000));
        }
        note.to_text()
    }

    #[test]
    fn quorum_is_counted() {
        let policy = WitnessPolicy::parse(&policy_text(Some(2))).unwrap();
        assert_eq!(policy.quorum, 2);
        assert_eq!(policy.check(&note(3)).unwrap().cosigned.len(), 3);
        assert_eq!(policy.check(&note(2)).unwrap().cosigned.len(), 2);
        assert_eq!(
            policy.check(&note(1)),
            Err(WitnessError::QuorumNotMet {
                valid: 1,
                required: 2
            })
        );
        let all = WitnessPolicy::parse(&policy_text(None)).unwrap();
        assert_eq!(all.quorum, 3);
        assert!(all.check(&note(2)).is_err());
    }

    #[test]
    fn a_bad_cosignature_fails_the_note() {
        let policy = WitnessPolicy::parse(&policy_text(Some(1))).unwrap();
        let mut parsed = SignedNote::parse(&note(2)).unwrap();
        parsed.signatures[2].signature[20] ^= 1;
        assert!(matches!(
            policy.check(&parsed.to_text()),
            Err(WitnessError::BadCosignature(_))
        ));
        // A cosignature over other text is as bad.
        let forged = note(1).replace("\n3\n", "\n4\n");
        assert!(policy.check(&forged).is_err());
    }

    #[test]
    fn bad_policies_are_refused() {
        let w = cosigners()[0].verifier().to_text();
        for text in [
            String::new(),
            format!("witness {w}\nquorum 2\n"),
            format!("witness {w}\nquorum 0\n"),
            format!("witness {w}\nwitness {w}\n"),
            format!("witness {w}\nquorum x\n"),
            format!("witness {w}\nquorum 1\nquorum 1\n"),
            format!("witnesses {w}\n"),
            "witness garbage\n".to_string(),
        ] {
            assert!(WitnessPolicy::parse(&text).is_err(), "{text:?}");
        }
    }
}
