//! C2SP `tlog-cosignature` v1 with Ed25519 (signature type 0x04): a
//! witness's timestamped signature over a checkpoint.
//!
//! The signed message is `cosignature/v1\ntime <T>\n` followed by the
//! checkpoint's whole note text (extension lines included); the signature
//! line's bytes are the key id (4 bytes), `T` (8 bytes, big-endian, POSIX
//! seconds) and the 64-byte Ed25519 signature. The key id is
//! `SHA-256(name || "\n" || 0x04 || public key)[:4]`.
//!
//! Key texts follow the signed-note vkey format with type 0x04: the
//! verifier key `<name>+<id>+base64(0x04 || public key)`, the secret key
//! `PRIVATE+KEY+<name>+<id>+base64(0x04 || seed)`.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::hash::checkpoint::{
    key_text, parse_secret_text, parse_vkey_text, typed_key_id, valid_name, CheckpointError,
};
use crate::hash::note::NoteSignature;
use crate::witness::WitnessError;

/// The signature type byte of timestamped Ed25519 cosignatures.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// The length of a v1 cosignature after the key id: timestamp and signature.
const COSIGNATURE_BYTES: usize = 8 + 64;

/// The message a v1 cosignature signs.
pub fn cosigned_message(note_text: &str, timestamp: u64) -> Vec<u8> {
    let mut msg = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    msg.extend_from_slice(note_text.as_bytes());
    msg
}

fn key_error(e: CheckpointError) -> WitnessError {
    match e {
        CheckpointError::BadKey("wrong signature type") => WitnessError::BadKey(
            "not a cosignature key (signature type 0x04, from `chainlog witness keygen`)",
        ),
        CheckpointError::BadKey(why) => WitnessError::BadKey(why),
        other => WitnessError::Note(other),
    }
}

/// A witness's signing key.
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cosigner({}+{:08x})", self.name, self.id())
    }
}

impl Cosigner {
    /// A cosigner from a 32-byte secret seed (use a CSPRNG).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, WitnessError> {
        if !valid_name(name) {
            return Err(WitnessError::BadKey(
                "a key name is non-empty, without spaces or '+'",
            ));
        }
        Ok(Cosigner {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+base64(0x04 || seed)`.
    pub fn parse(text: &str) -> Result<Self, WitnessError> {
        let (name, seed) = parse_secret_text(text, ALG_COSIGNATURE_V1).map_err(key_error)?;
        Cosigner::from_seed(&name, seed)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        typed_key_id(
            &self.name,
            ALG_COSIGNATURE_V1,
            self.key.verifying_key().as_bytes(),
        )
    }

    /// The secret key text.
    pub fn to_secret_text(&self) -> String {
        format!(
            "PRIVATE+KEY+{}",
            key_text(
                &self.name,
                ALG_COSIGNATURE_V1,
                self.key.as_bytes(),
                self.id()
            )
        )
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Cosigns a checkpoint's note text at `timestamp` (POSIX seconds).
    pub fn cosign(&self, note_text: &str, timestamp: u64) -> NoteSignature {
        let signature = self.key.sign(&cosigned_message(note_text, timestamp));
        let mut bytes = Vec::with_capacity(COSIGNATURE_BYTES);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        NoteSignature {
            name: self.name.clone(),
            id: self.id(),
            signature: bytes,
        }
    }
}

/// A witness's verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Parses `<name>+<id>+base64(0x04 || public key)`.
    pub fn parse(text: &str) -> Result<Self, WitnessError> {
        let (name, key) = parse_vkey_text(text, ALG_COSIGNATURE_V1).map_err(key_error)?;
        Ok(CosignatureVerifier { name, key })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn id(&self) -> u32 {
        typed_key_id(&self.name, ALG_COSIGNATURE_V1, self.key.as_bytes())
    }

    /// The verifier key text.
    pub fn to_text(&self) -> String {
        key_text(
            &self.name,
            ALG_COSIGNATURE_V1,
            self.key.as_bytes(),
            self.id(),
        )
    }

    /// Whether a signature line is this key's (name and id).
    pub fn is_signer_of(&self, signature: &NoteSignature) -> bool {
        signature.name == self.name && signature.id == self.id()
    }

    /// Checks this key's cosignature over `note_text`; returns its timestamp.
    pub fn verify(&self, note_text: &str, signature: &NoteSignature) -> Result<u64, WitnessError> {
        let bad = || WitnessError::BadCosignature(self.to_text());
        if !self.is_signer_of(signature) || signature.signature.len() != COSIGNATURE_BYTES {
            return Err(bad());
        }
        let (time, sig) = signature.signature.split_at(8);
        let mut t = [0; 8];
        t.copy_from_slice(time);
        let timestamp = u64::from_be_bytes(t);
        if timestamp > i64::MAX as u64 {
            return Err(bad());
        }
        let sig = Signature::from_slice(sig).map_err(|_| bad())?;
        self.key
            .verify(&cosigned_message(note_text, timestamp), &sig)
            .map_err(|_| bad())?;
        Ok(timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::checkpoint::NoteSigner;
    use crate::hash::note::SignedNote;

    const TEXT: &str = "example.com/log\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    fn cosigner() -> Cosigner {
        Cosigner::from_seed("witness.example/w1", [5; 32]).unwrap()
    }

    #[test]
    fn keys_round_trip_and_differ_from_log_keys() {
        let c = cosigner();
        let again = Cosigner::parse(&c.to_secret_text()).unwrap();
        assert_eq!(again.to_secret_text(), c.to_secret_text());
        let v = c.verifier();
        assert_eq!(CosignatureVerifier::parse(&v.to_text()).unwrap(), v);
        // The same seed as a log key (type 0x01) has another id and text.
        let log = NoteSigner::from_seed("witness.example/w1", [5; 32]).unwrap();
        assert_ne!(log.id(), c.id());
        assert!(CosignatureVerifier::parse(&log.verifier().to_text()).is_err());
        assert!(Cosigner::parse(&log.to_secret_text()).is_err());
        assert!(NoteSigner::parse(&c.to_secret_text()).is_err());
    }

    #[test]
    fn message_layout() {
        assert_eq!(
            cosigned_message(TEXT, 1679315147),
            format!("cosignature/v1\ntime 1679315147\n{TEXT}").into_bytes()
        );
    }

    #[test]
    fn cosignature_round_trip() {
        let sig = cosigner().cosign(TEXT, 1_700_000_000);
        assert_eq!(sig.signature.len(), 72);
        let line = sig.line();
        let parsed = NoteSignature::parse_line(line.trim_end()).unwrap();
        assert_eq!(
            cosigner().verifier().verify(TEXT, &parsed).unwrap(),
            1_700_000_000
        );
        let note = format!("{TEXT}\n{line}");
        assert_eq!(SignedNote::parse(&note).unwrap().signatures, vec![sig]);
    }

    #[test]
    fn corruption_is_detected() {
        let v = cosigner().verifier();
        let sig = cosigner().cosign(TEXT, 1_700_000_000);
        // Another text, another time, a flipped bit, a short signature.
        assert!(v.verify(&TEXT.replace("2163", "2164"), &sig).is_err());
        let mut later = sig.clone();
        later.signature[7] ^= 1;
        assert!(v.verify(TEXT, &later).is_err());
        let mut flipped = sig.clone();
        flipped.signature[40] ^= 1;
        assert!(v.verify(TEXT, &flipped).is_err());
        let mut short = sig.clone();
        short.signature.pop();
        assert!(v.verify(TEXT, &short).is_err());
        let other = Cosigner::from_seed("witness.example/w1", [6; 32]).unwrap();
        assert!(other.verifier().verify(TEXT, &sig).is_err());
        let mut wrong_id = v.to_text();
        let at = wrong_id.find('+').unwrap() + 1;
        let c = if &wrong_id[at..=at] == "0" { "1" } else { "0" };
        wrong_id.replace_range(at..=at, c);
        assert!(CosignatureVerifier::parse(&wrong_id).is_err());
    }
}
