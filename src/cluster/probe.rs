//! The start-up check that a bucket enforces conditional writes: without
//! it, a lease excludes nobody and a compare-and-swap swaps anyway.
//!
//! On one fresh probe key, in order: a create-only PUT (must be written),
//! a second create-only PUT (must be refused: `If-None-Match: *`), a swap
//! with a wrong ETag (must be refused: `If-Match`), a swap with the right
//! one (must be written); then the key is deleted, whatever happened.
//!
//! A sequential probe proves that the server evaluates the conditions, not
//! that it evaluates them atomically with the write: s3s-fs passes it, yet
//! checks then writes, and lets two concurrent creates both win (measured
//! in docs/CLUSTER.md). Only a server known to be atomic (AWS S3, Ceph
//! radosgw, R2, MinIO) should back a cluster.

use std::fmt;

use super::ClusterError;
use crate::archive::{Bucket, Conditional, ObjectVersion};

/// One check of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeCheck {
    /// The first create-only PUT of a fresh key was refused.
    FirstCreateRefused,
    /// A second create-only PUT of the same key was written.
    SecondCreateWritten,
    /// A swap with a wrong ETag was written.
    WrongSwapWritten,
    /// A swap with the ETag just written was refused.
    RightSwapRefused,
    /// After the right swap, the object does not hold its bytes.
    SwapNotVisible,
}

impl fmt::Display for ProbeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeCheck::FirstCreateRefused => {
                "a create-only PUT (If-None-Match: *) of a fresh key was refused"
            }
            ProbeCheck::SecondCreateWritten => {
                "a second create-only PUT (If-None-Match: *) of the same key was accepted"
            }
            ProbeCheck::WrongSwapWritten => "a PUT with If-Match on a wrong ETag was accepted",
            ProbeCheck::RightSwapRefused => "a PUT with If-Match on the current ETag was refused",
            ProbeCheck::SwapNotVisible => {
                "after a compare-and-swap the object does not hold the bytes written"
            }
        })
    }
}

/// The probe key's name under the prefix: unique per call.
fn probe_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut random = [0u8; 8];
    // A collision only makes the first create fail; the time alone will do.
    let _ = getrandom::getrandom(&mut random);
    format!("probe/{nanos}-{}.json", u64::from_le_bytes(random))
}

/// Checks that `bucket` enforces `If-None-Match: *` and `If-Match` on PUT,
/// on a probe key under its prefix (deleted afterwards).
/// [`ClusterError::NotEnforced`] names the check that failed.
pub fn probe_conditional_writes(bucket: &Bucket) -> Result<(), ClusterError> {
    let name = probe_name();
    let result = run_checks(bucket, &name);
    let deleted = bucket.delete(&name);
    result?;
    deleted?;
    Ok(())
}

fn run_checks(bucket: &Bucket, name: &str) -> Result<(), ClusterError> {
    let failed = |check| ClusterError::NotEnforced {
        url: bucket.url(name),
        check,
    };
    let first = match bucket.put_create(name, b"probe 1".to_vec())? {
        Conditional::Written(version) => version,
        Conditional::Refused => return Err(failed(ProbeCheck::FirstCreateRefused)),
    };
    if let Conditional::Written(_) = bucket.put_create(name, b"probe 2".to_vec())? {
        return Err(failed(ProbeCheck::SecondCreateWritten));
    }
    let wrong = ObjectVersion {
        e_tag: "00000000000000000000000000000000".into(),
        version: None,
    };
    let current = match bucket.put_swap(name, b"probe 3".to_vec(), &wrong)? {
        Conditional::Written(_) => return Err(failed(ProbeCheck::WrongSwapWritten)),
        Conditional::Refused => first,
    };
    if let Conditional::Refused = bucket.put_swap(name, b"probe 4".to_vec(), &current)? {
        return Err(failed(ProbeCheck::RightSwapRefused));
    }
    match bucket.get_versioned(name)? {
        Some(found) if found.bytes == b"probe 4" => Ok(()),
        _ => Err(failed(ProbeCheck::SwapNotVisible)),
    }
}
