//! Signed checkpoints: the C2SP `tlog-checkpoint` format, signed as a C2SP
//! `signed-note` with Ed25519, so that the transparency-log ecosystem's tools
//! can check them.
//!
//! A checkpoint body is:
//!
//! ```text
//! <origin>\n                 e.g. chainlog/5f0c…(the log id)
//! <tree size, decimal>\n     records appended since the log was created
//! <root hash, base64>\n      RFC 6962 root over the records' chain hashes
//! chainlog-head <hex>\n      extension: the chain hash of the last record
//! ```
//!
//! and the signed note is the body, a blank line, and one line per signature:
//! `— <key name> <base64(key id (4 bytes, big-endian) || Ed25519 signature)>`.
//! The key id is the first four bytes of `SHA-256(name || "\n" || 0x01 || public key)`.
//!
//! Key files use the formats of Go's `golang.org/x/mod/sumdb/note`:
//! verifier keys are `<name>+<key id, 8 hex digits>+<base64(0x01 || public key)>`,
//! signer keys `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>`.
//!
//! This module does no I/O and uses only `sha2`, `ed25519-dalek` and `base64`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::hash::chain::ChainHash;

/// The signature type byte for Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
/// Extension line carrying the chain head.
pub const HEAD_EXTENSION: &str = "chainlog-head";

/// Why a key, note or checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A key's text is malformed.
    #[error("malformed key: {0}")]
    BadKey(&'static str),
    /// The note or checkpoint text is malformed.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// No signature line is by the given key.
    #[error("the checkpoint has no signature by key {name}+{id:08x}")]
    NotSignedByKey {
        /// The key's name.
        name: String,
        /// The key's id.
        id: u32,
    },
    /// A signature by the key does not verify.
    #[error("the signature by key {0} does not verify: the checkpoint was changed or forged")]
    BadSignature(String),
}

/// Whether `name` is a valid signed-note key name.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    typed_key_id(name, ALG_ED25519, public)
}

/// `SHA-256(name || "\n" || alg || public key)[:4]`: the signed-note key id
/// of a key of signature type `alg`.
pub(crate) fn typed_key_id(name: &str, alg: u8, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([alg]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The error for a key of another signature type than Ed25519 (0x01).
fn unsupported_type(e: CheckpointError) -> CheckpointError {
    match e {
        CheckpointError::BadKey("wrong signature type") => {
            CheckpointError::BadKey("unsupported signature type (only Ed25519, 0x01)")
        }
        other => other,
    }
}

/// Splits `PRIVATE+KEY+<name>+<id>+base64(alg || seed)` into the name and
/// the seed, checking the name and that the id is the key's.
pub(crate) fn parse_secret_text(
    text: &str,
    alg: u8,
) -> Result<(String, [u8; 32]), CheckpointError> {
    let rest = text
        .trim_end()
        .strip_prefix("PRIVATE+KEY+")
        .ok_or(CheckpointError::BadKey(
            "a secret key starts with PRIVATE+KEY+",
        ))?;
    let (name, _public, seed) = split_key_text(rest, alg, |seed| {
        SigningKey::from_bytes(seed).verifying_key().to_bytes()
    })
    .map_err(|e| match e {
        CheckpointError::BadKey("expected <name>+<id>+<key>") => {
            CheckpointError::BadKey("expected PRIVATE+KEY+<name>+<id>+<key>")
        }
        other => other,
    })?;
    Ok((name, seed))
}

/// Splits `<name>+<id>+base64(alg || public key)` into the name and the
/// key, checking the name, the key and that the id is the key's.
pub(crate) fn parse_vkey_text(
    text: &str,
    alg: u8,
) -> Result<(String, VerifyingKey), CheckpointError> {
    let (name, public, _) = split_key_text(text.trim(), alg, |key| *key)?;
    let key = VerifyingKey::from_bytes(&public)
        .map_err(|_| CheckpointError::BadKey("not a valid Ed25519 public key"))?;
    Ok((name, key))
}

/// `<name>+<id>+<key data>` with the key data decoded, the public key
/// (`public` of the decoded bytes) and the id checked.
fn split_key_text(
    text: &str,
    alg: u8,
    public: impl Fn(&[u8; 32]) -> [u8; 32],
) -> Result<(String, [u8; 32], [u8; 32]), CheckpointError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(CheckpointError::BadKey("expected <name>+<id>+<key>"));
    };
    if !valid_name(name) {
        return Err(CheckpointError::BadKey(
            "a key name is non-empty, without spaces or '+'",
        ));
    }
    let key = decode_typed_key(data, alg)?;
    let public = public(&key);
    if format!("{:08x}", typed_key_id(name, alg, &public)) != id {
        return Err(CheckpointError::BadKey("the key id does not match the key"));
    }
    Ok((name.to_string(), public, key))
}

/// `<name>+<id>+base64(alg || key)`: a vkey, or after `PRIVATE+KEY+` a secret key.
pub(crate) fn key_text(name: &str, alg: u8, key: &[u8; 32], id: u32) -> String {
    format!("{name}+{id:08x}+{}", encode_typed_key(alg, key))
}

/// The 32 key bytes of `base64(alg || key)`.
pub(crate) fn decode_typed_key(b64: &str, alg: u8) -> Result<[u8; 32], CheckpointError> {
    let raw = B64
        .decode(b64)
        .map_err(|_| CheckpointError::BadKey("key data is not base64"))?;
    match raw.split_first() {
        Some((&t, key)) if t == alg && key.len() == 32 => {
            let mut k = [0; 32];
            k.copy_from_slice(key);
            Ok(k)
        }
        Some((&t, _)) if t == alg => Err(CheckpointError::BadKey("an Ed25519 key is 32 bytes")),
        _ => Err(CheckpointError::BadKey("wrong signature type")),
    }
}

/// `base64(alg || key)`.
fn encode_typed_key(alg: u8, key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(alg);
    raw.extend_from_slice(key);
    B64.encode(raw)
}

/// An Ed25519 signing key with its name.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.id())
    }
}

impl NoteSigner {
    /// A signer from a 32-byte secret seed (use a CSPRNG, e.g. `getrandom`).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, CheckpointError> {
        if !valid_name(name) {
            return Err(CheckpointError::BadKey(
                "a key name is non-empty, without spaces or '+'",
            ));
        }
        Ok(NoteSigner {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64>`.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let (name, seed) = parse_secret_text(text, ALG_ED25519).map_err(unsupported_type)?;
        NoteSigner::from_seed(&name, seed)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        key_id(&self.name, self.key.verifying_key().as_bytes())
    }

    /// The secret key text (`PRIVATE+KEY+…`).
    pub fn to_secret_text(&self) -> String {
        format!(
            "PRIVATE+KEY+{}",
            key_text(&self.name, ALG_ED25519, self.key.as_bytes(), self.id())
        )
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline) as a signed note.
    pub fn sign_note(&self, text: &str) -> Result<String, CheckpointError> {
        check_note_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut sig = Vec::with_capacity(68);
        sig.extend_from_slice(&self.id().to_be_bytes());
        sig.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(sig)
        ))
    }
}

/// An Ed25519 verifier key with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<id>+<base64>`.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let (name, key) = parse_vkey_text(text, ALG_ED25519).map_err(unsupported_type)?;
        Ok(NoteVerifier { name, key })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        key_id(&self.name, self.key.as_bytes())
    }

    /// The verifier key text.
    pub fn to_text(&self) -> String {
        key_text(&self.name, ALG_ED25519, self.key.as_bytes(), self.id())
    }

    /// Checks a signed note and returns its text. Signature lines by other
    /// keys are ignored; one valid signature by this key is required.
    pub fn open_note<'a>(&self, note: &'a str) -> Result<&'a str, CheckpointError> {
        let parsed = crate::hash::note::SignedNote::parse(note)?;
        let text = &note[..parsed.text.len()];
        let mut found = false;
        for sig in parsed
            .signatures
            .iter()
            .filter(|s| s.name == self.name && s.id == self.id())
        {
            let signature = Signature::from_slice(&sig.signature)
                .map_err(|_| CheckpointError::BadSignature(self.to_text()))?;
            self.key
                .verify(text.as_bytes(), &signature)
                .map_err(|_| CheckpointError::BadSignature(self.to_text()))?;
            found = true;
        }
        if found {
            Ok(text)
        } else {
            Err(CheckpointError::NotSignedByKey {
                name: self.name.clone(),
                id: self.id(),
            })
        }
    }
}

/// Checks a note's text: ends in a newline, no control characters, no blank line.
pub(crate) fn check_note_text(text: &str) -> Result<(), CheckpointError> {
    if !text.ends_with('\n') {
        return Err(CheckpointError::Malformed(
            "note text must end with a newline".into(),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CheckpointError::Malformed(
            "note text has control characters".into(),
        ));
    }
    if text.contains("\n\n") {
        return Err(CheckpointError::Malformed(
            "note text has a blank line".into(),
        ));
    }
    Ok(())
}

/// A log checkpoint: the log's size, Merkle root and chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log: `<prefix>/<log id hex>`.
    pub origin: String,
    /// Records appended since the log was created.
    pub size: u64,
    /// RFC 6962 root over the chain hashes of records `0..size`.
    pub root: [u8; 32],
    /// The chain hash of record `size - 1` (absent for an empty log).
    pub head: Option<ChainHash>,
}

impl Checkpoint {
    /// The checkpoint's note text.
    pub fn body(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        if let Some(head) = self.head {
            text.push_str(&format!("{HEAD_EXTENSION} {head}\n"));
        }
        text
    }

    /// Parses a checkpoint body (the text of a signed note).
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::Malformed(why.to_string());
        let mut lines = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("must end with a newline"))?
            .split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("missing origin line"))?;
        let size = lines.next().ok_or_else(|| bad("missing size line"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("the size line is not a decimal number"));
        }
        let size: u64 = size.parse().map_err(|_| bad("the size is out of range"))?;
        let root = lines.next().ok_or_else(|| bad("missing root hash line"))?;
        let root: [u8; 32] = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("the root hash is not 32 bytes of base64"))?;
        let mut head = None;
        for line in lines {
            if line.is_empty() {
                return Err(bad("empty extension line"));
            }
            if let Some(hex) = line
                .strip_prefix(HEAD_EXTENSION)
                .and_then(|r| r.strip_prefix(' '))
            {
                head = Some(
                    hex.parse()
                        .map_err(|_| bad("the chain head is not 64 hex digits"))?,
                );
            }
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            head,
        })
    }

    /// Signs the checkpoint.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        signer.sign_note(&self.body())
    }

    /// Checks a signed checkpoint's signature and parses it.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, CheckpointError> {
        Checkpoint::parse_body(verifier.open_note(note)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("audit.example", [7; 32]).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "chainlog/00112233445566778899aabbccddeeff".into(),
            size: 1042,
            root: [9; 32],
            head: Some(ChainHash([3; 32])),
        }
    }

    #[test]
    fn keys_round_trip() {
        let s = signer();
        let again = NoteSigner::parse(&s.to_secret_text()).unwrap();
        assert_eq!(again.to_secret_text(), s.to_secret_text());
        let v = s.verifier();
        assert_eq!(NoteVerifier::parse(&v.to_text()).unwrap(), v);
        assert!(v.to_text().starts_with("audit.example+"));
        let mut wrong_id = v.to_text();
        wrong_id.replace_range(14..15, if &wrong_id[14..15] == "0" { "1" } else { "0" });
        assert!(NoteVerifier::parse(&wrong_id).is_err());
        assert!(NoteSigner::from_seed("bad name", [0; 32]).is_err());
        assert!(NoteVerifier::parse("garbage").is_err());
    }

    #[test]
    fn signed_checkpoint_round_trip() {
        let note = checkpoint().sign(&signer()).unwrap();
        assert!(note.starts_with("chainlog/00112233445566778899aabbccddeeff\n1042\n"));
        assert!(note.contains("\n\n\u{2014} audit.example "));
        assert_eq!(
            Checkpoint::open(&note, &signer().verifier()).unwrap(),
            checkpoint()
        );
    }

    #[test]
    fn tampered_or_foreign_checkpoints_fail() {
        let note = checkpoint().sign(&signer()).unwrap();
        let changed = note.replace("\n1042\n", "\n1041\n");
        assert!(matches!(
            Checkpoint::open(&changed, &signer().verifier()),
            Err(CheckpointError::BadSignature(_))
        ));
        let other = NoteSigner::from_seed("audit.example", [8; 32]).unwrap();
        assert!(matches!(
            Checkpoint::open(&note, &other.verifier()),
            Err(CheckpointError::NotSignedByKey { .. })
        ));
        for garbled in ["", "x", "chainlog/x\n1\n", "a\nb\nc\n\n\u{2014} k AAAA\n"] {
            assert!(
                Checkpoint::open(garbled, &signer().verifier()).is_err(),
                "{garbled:?}"
            );
        }
        for body in ["o\n01\nAAAA\n", "o\n-1\n", "o\n1\nnot base64\n", "o\n1\n"] {
            assert!(Checkpoint::parse_body(body).is_err(), "{body:?}");
        }
    }
}
