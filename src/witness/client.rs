//! The log's side of C2SP `tlog-witness`: submit a signed checkpoint with a
//! consistency proof to a witness and take back its cosignature.
//!
//! The first request uses the size the log believes the witness last
//! cosigned (the previous cosigned checkpoint's, or 0); on "409 Conflict"
//! it retries once with the size the witness names, when that size is not
//! beyond the checkpoint's. A returned cosignature is checked with the
//! witness's key before it is used.

use std::time::Duration;

use crate::hash::merkle::Hash;
use crate::hash::note::{NoteSignature, SignedNote};
use crate::hash::proof::tree_root;
use crate::query::proofs::ProveError;
use crate::query::prover::Prover;
use crate::witness::cosignature::CosignatureVerifier;
use crate::witness::protocol::{parse_decimal, AddCheckpoint};

/// How long one request to a witness may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from a witness.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A witness as the log knows it: its submission prefix and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessEndpoint {
    /// The submission prefix, e.g. `http://127.0.0.1:7380` (no trailing slash).
    pub url: String,
    /// The witness's cosignature key.
    pub key: CosignatureVerifier,
}

impl WitnessEndpoint {
    /// Parses `URL=VKEY`.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let (url, key) = text
            .split_once('=')
            .ok_or_else(|| ClientError::Usage(format!("{text:?} is not URL=VKEY")))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "witness URL {url:?} is not http:// or https://"
            )));
        }
        let key = CosignatureVerifier::parse(key)
            .map_err(|e| ClientError::Usage(format!("witness key {key:?}: {e}")))?;
        Ok(WitnessEndpoint {
            url: url.trim_end_matches('/').to_string(),
            key,
        })
    }
}

/// Why a witness did not cosign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A witness was named wrongly.
    #[error("{0}")]
    Usage(String),
    /// The request could not be sent or the answer read.
    #[error("witness {url}: {why}")]
    Http {
        /// The witness.
        url: String,
        /// What failed.
        why: String,
    },
    /// The witness refused the checkpoint.
    #[error("witness {url} refused the checkpoint ({status}): {body}")]
    Refused {
        /// The witness.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The answer's text.
        body: String,
    },
    /// The witness has cosigned a larger tree than this checkpoint's: a
    /// rollback, or a fork of this log elsewhere.
    #[error("witness {url} has cosigned a tree of {known} records; this checkpoint has {size}")]
    WitnessAhead {
        /// The witness.
        url: String,
        /// Its size.
        known: u64,
        /// The checkpoint's.
        size: u64,
    },
    /// The answer holds no valid cosignature by the witness's key.
    #[error("witness {url}: {why}")]
    BadAnswer {
        /// The witness.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The consistency proof could not be made.
    #[error("the consistency proof from size {old}: {error}")]
    Proof {
        /// The old size.
        old: u64,
        /// Why.
        error: ProveError,
    },
}

/// The consistency proof from the log's tree of `old` records to the
/// checkpoint's tree (`size`, `root`), both checked against the log.
pub fn proof_from(
    prover: &mut Prover,
    old: u64,
    size: u64,
    root: &Hash,
) -> Result<Vec<Hash>, ClientError> {
    if old == 0 {
        return Ok(Vec::new());
    }
    let proof_error = |error| ClientError::Proof { old, error };
    let old_root = tree_root(prover, old).map_err(|e| proof_error(ProveError::from(e)))?;
    Ok(prover
        .consistency(old, &old_root, size, root)
        .map_err(proof_error)?
        .proof)
}

/// What one `add-checkpoint` request got.
enum Answer {
    Cosigned(NoteSignature),
    Conflict(u64),
}

async fn submit(
    client: &reqwest::Client,
    witness: &WitnessEndpoint,
    note: &SignedNote,
    request: &AddCheckpoint,
) -> Result<Answer, ClientError> {
    let http = |why: String| ClientError::Http {
        url: witness.url.clone(),
        why,
    };
    let response = client
        .post(format!("{}/add-checkpoint", witness.url))
        .timeout(REQUEST_TIMEOUT)
        .body(request.to_body())
        .send()
        .await
        .map_err(|e| http(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| http(e.to_string()))?;
    if body.len() > MAX_ANSWER_BYTES {
        return Err(http(format!("an answer of {} bytes", body.len())));
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let bad = |why: String| ClientError::BadAnswer {
        url: witness.url.clone(),
        why,
    };
    match status {
        200 => {
            for line in body.lines() {
                let sig = NoteSignature::parse_line(line).map_err(|e| bad(e.to_string()))?;
                if witness.key.is_signer_of(&sig) {
                    witness
                        .key
                        .verify(&note.text, &sig)
                        .map_err(|e| bad(e.to_string()))?;
                    return Ok(Answer::Cosigned(sig));
                }
            }
            Err(bad(format!(
                "no cosignature by {} in its answer",
                witness.key.to_text()
            )))
        }
        409 => parse_decimal(body.trim_end_matches('\n'))
            .map(Answer::Conflict)
            .ok_or_else(|| bad(format!("409 without a size: {body:?}"))),
        _ => Err(ClientError::Refused {
            url: witness.url.clone(),
            status,
            body: body.trim_end().to_string(),
        }),
    }
}

/// Gets `witness`'s cosignature on the signed checkpoint `note` (of `size`
/// records), first claiming `old` as the size it last cosigned; `prove`
/// makes the consistency proof from a size to the checkpoint.
pub async fn cosign(
    client: &reqwest::Client,
    witness: &WitnessEndpoint,
    note: &str,
    size: u64,
    old: u64,
    prove: &mut dyn FnMut(u64) -> Result<Vec<Hash>, ClientError>,
) -> Result<NoteSignature, ClientError> {
    let parsed = SignedNote::parse(note).map_err(|e| ClientError::Usage(e.to_string()))?;
    let mut old = old.min(size);
    for attempt in 0..2 {
        let request = AddCheckpoint {
            old_size: old,
            proof: prove(old)?,
            note: note.to_string(),
        };
        match submit(client, witness, &parsed, &request).await? {
            Answer::Cosigned(sig) => return Ok(sig),
            Answer::Conflict(known) if known > size => {
                return Err(ClientError::WitnessAhead {
                    url: witness.url.clone(),
                    known,
                    size,
                })
            }
            Answer::Conflict(known) if attempt == 0 => old = known,
            Answer::Conflict(known) => {
                return Err(ClientError::BadAnswer {
                    url: witness.url.clone(),
                    why: format!("409 again, now naming size {known}"),
                })
            }
        }
    }
    Err(ClientError::BadAnswer {
        url: witness.url.clone(),
        why: "no answer after a retry".into(),
    })
}
