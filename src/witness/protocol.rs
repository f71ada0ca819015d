//! The C2SP `tlog-witness` `add-checkpoint` request body, both ways:
//!
//! ```text
//! old <size>\n            the size of the checkpoint the witness last cosigned
//! <base64 hash>\n         zero to 63 consistency proof lines
//! \n
//! <signed checkpoint note>
//! ```

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::hash::merkle::Hash;
use crate::hash::note::MAX_NOTE_BYTES;
use crate::witness::WitnessError;

/// The most consistency proof lines a request may carry (the spec's limit).
pub const MAX_PROOF_LINES: usize = 63;
/// The largest request body: the old size line, 63 proof lines and a note.
pub const MAX_REQUEST_BYTES: usize = 32 + MAX_PROOF_LINES * 45 + 1 + MAX_NOTE_BYTES;
/// The `Content-Type` of a 409 answer's body (the size the witness knows).
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size the client believes the witness last cosigned.
    pub old_size: u64,
    /// The consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint.
    pub note: String,
}

/// Parses a decimal without leading zeros (`0` alone is fine).
pub fn parse_decimal(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

impl AddCheckpoint {
    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<Self, WitnessError> {
        let bad = |why: &str| WitnessError::Request(why.to_string());
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad("the request body is too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
        let (first, mut rest) = text
            .split_once('\n')
            .ok_or_else(|| bad("no old size line"))?;
        let old_size = first
            .strip_prefix("old ")
            .and_then(parse_decimal)
            .ok_or_else(|| bad("the first line is not `old <size>`"))?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = rest
                .split_once('\n')
                .ok_or_else(|| bad("no blank line before the checkpoint"))?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let hash: Hash = B64
                .decode(line)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad("a proof line is not a base64 SHA-256 hash"))?;
            proof.push(hash);
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            note: rest.to_string(),
        })
    }

    /// The request body.
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            body.push_str(&B64.encode(hash));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AddCheckpoint {
        AddCheckpoint {
            old_size: 20852014,
            proof: vec![[1; 32], [2; 32]],
            note: "example.com/log\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/log AAAA\n".into(),
        }
    }

    #[test]
    fn round_trip() {
        let body = request().to_body();
        assert!(body.starts_with("old 20852014\nAQEBAQEB"));
        assert_eq!(AddCheckpoint::parse(body.as_bytes()).unwrap(), request());
        let empty = AddCheckpoint {
            old_size: 0,
            proof: vec![],
            note: "n\n".into(),
        };
        assert_eq!(empty.to_body(), "old 0\n\nn\n");
        assert_eq!(AddCheckpoint::parse(b"old 0\n\nn\n").unwrap(), empty);
    }

    #[test]
    fn corruption_is_detected() {
        let long_proof = format!(
            "old 1\n{}\nn\n",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n".repeat(64)
        );
        for bad in [
            "".to_string(),
            "old 1".into(),
            "old 01\n\nn\n".into(),
            "old -1\n\nn\n".into(),
            "new 1\n\nn\n".into(),
            "old 1\nAQEB\n\nn\n".into(),
            "old 1\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n".into(),
            long_proof,
        ] {
            assert!(
                matches!(
                    AddCheckpoint::parse(bad.as_bytes()),
                    Err(WitnessError::Request(_))
                ),
                "{bad:?}"
            );
        }
        assert!(AddCheckpoint::parse(&[b'o', b'l', b'd', b' ', 0xff, b'\n']).is_err());
    }
}
