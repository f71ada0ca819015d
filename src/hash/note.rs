//! Signed notes with any number of signature lines (C2SP `signed-note`):
//! parsed into their text and signatures, signatures added, and written
//! back byte for byte. Checking a signature is the key's business
//! ([`crate::hash::checkpoint::NoteVerifier`], and the witness's
//! cosignature keys); this module only splits and joins.
//!
//! ```text
//! <text, ending in a newline>
//! <blank line>
//! — <key name> <base64(key id (4 bytes, big-endian) || signature)>
//! — …
//! ```

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::hash::checkpoint::{check_note_text, valid_name, CheckpointError};

/// The most signature lines a note may carry (the signed-note spec asks
/// verifiers to accept at least 16).
pub const MAX_SIGNATURES: usize = 64;
/// The largest note parsed, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key's name.
    pub name: String,
    /// The key id (the first four bytes of the decoded signature).
    pub id: u32,
    /// The signature bytes after the key id.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses `— <name> <base64>` (without the newline).
    pub fn parse_line(line: &str) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::Malformed(format!("{why}: {line:?}"));
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or_else(|| bad("bad signature line"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad("bad signature line"))?;
        if !valid_name(name) {
            return Err(bad("bad key name on signature line"));
        }
        let raw = B64
            .decode(b64)
            .map_err(|_| bad("signature is not base64"))?;
        if raw.len() < 4 {
            return Err(bad("signature too short"));
        }
        Ok(NoteSignature {
            name: name.to_string(),
            id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            signature: raw[4..].to_vec(),
        })
    }

    /// The signature line, with its newline.
    pub fn line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!("\u{2014} {} {}\n", self.name, B64.encode(raw))
    }
}

/// A signed note: its text and its signature lines, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The text, ending in a newline (without the blank line).
    pub text: String,
    /// The signatures.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Splits a note at its last blank line and parses every signature
    /// line. A note without signatures, with more than [`MAX_SIGNATURES`]
    /// or longer than [`MAX_NOTE_BYTES`] is refused.
    pub fn parse(note: &str) -> Result<Self, CheckpointError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::Malformed(format!(
                "the note is longer than {MAX_NOTE_BYTES} bytes"
            )));
        }
        let split = note.rfind("\n\n").ok_or_else(|| {
            CheckpointError::Malformed("no blank line before the signatures".into())
        })?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        check_note_text(text)?;
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(CheckpointError::Malformed("no signature lines".into()));
        }
        let signatures = sigs
            .lines()
            .map(NoteSignature::parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        if signatures.len() > MAX_SIGNATURES {
            return Err(CheckpointError::Malformed(format!(
                "more than {MAX_SIGNATURES} signature lines"
            )));
        }
        Ok(SignedNote {
            text: text.to_string(),
            signatures,
        })
    }

    /// Adds `signature` unless a signature by the same key (name and id) is
    /// there already; returns whether it was added.
    pub fn add(&mut self, signature: NoteSignature) -> bool {
        let known = self
            .signatures
            .iter()
            .any(|s| s.name == signature.name && s.id == signature.id);
        if known {
            return false;
        }
        self.signatures.push(signature);
        true
    }

    /// The note as text: the text, a blank line, the signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for sig in &self.signatures {
            out.push_str(&sig.line());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: &str =
        "origin\n7\nAAAA\n\n\u{2014} log.example AAAAAQID\n\u{2014} w.example/1 q83v7gAAAAA=\n";

    #[test]
    fn round_trip_and_add() {
        let mut note = SignedNote::parse(NOTE).unwrap();
        assert_eq!(note.text, "origin\n7\nAAAA\n");
        assert_eq!(note.signatures.len(), 2);
        assert_eq!(note.signatures[0].id, 1);
        assert_eq!(note.signatures[0].signature, vec![2, 3]);
        assert_eq!(note.signatures[1].id, 0xabcd_efee);
        assert_eq!(note.to_text(), NOTE);
        let again = note.signatures[1].clone();
        assert!(!note.add(again));
        assert!(note.add(NoteSignature {
            name: "w.example/2".into(),
            id: 2,
            signature: vec![9; 72],
        }));
        let text = note.to_text();
        assert_eq!(SignedNote::parse(&text).unwrap(), note);
    }

    #[test]
    fn corruption_is_detected() {
        for bad in [
            "",
            "origin\n7\n",
            "origin\n7\n\n",
            "origin\n7\n\n\u{2014} k AAAA",
            "origin\n7\n\n- k AAAAAQID\n",
            "origin\n7\n\n\u{2014} k !!!!\n",
            "origin\n7\n\n\u{2014} k AAA=\n",
            "origin\n7\n\n\u{2014} bad+name AAAAAQID\n",
            "ori\u{1}gin\n7\n\n\u{2014} k AAAAAQID\n",
        ] {
            assert!(
                matches!(SignedNote::parse(bad), Err(CheckpointError::Malformed(_))),
                "{bad:?}"
            );
        }
        let many: String = (0..=MAX_SIGNATURES)
            .map(|i| format!("\u{2014} k{i} AAAAAQID\n"))
            .collect();
        assert!(SignedNote::parse(&format!("o\n1\n\n{many}")).is_err());
    }
}
