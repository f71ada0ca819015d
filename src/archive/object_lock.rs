//! S3 Object Lock on archived objects: a retention mode and a retain-until
//! date sent with each PUT (`x-amz-object-lock-mode`,
//! `x-amz-object-lock-retain-until-date`).
//!
//! The headers go to object_store as default headers of a second client
//! that [`Bucket`](super::Bucket) uses only for PUTs. object_store adds
//! default headers to each request before it signs it (SigV4), and S3
//! refuses any `x-amz-*` header that is not signed.

use std::fmt;
use std::str::FromStr;

use object_store::{HeaderMap, HeaderValue};

use super::ArchiveError;
use crate::event::Timestamp;

/// The header that carries the mode.
const MODE_HEADER: &str = "x-amz-object-lock-mode";
/// The header that carries the retain-until date.
const RETAIN_UNTIL_HEADER: &str = "x-amz-object-lock-retain-until-date";

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;
const NANOS_PER_SEC: i64 = 1_000_000_000;

/// How S3 enforces an object's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectLockMode {
    /// Nobody, the bucket owner and the root account included, can delete
    /// or overwrite the object, or shorten its retention, until the date.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can still delete the
    /// object or shorten its retention; everyone else cannot.
    Governance,
}

impl ObjectLockMode {
    /// The value of `x-amz-object-lock-mode`.
    pub fn as_header(self) -> &'static str {
        match self {
            ObjectLockMode::Compliance => "COMPLIANCE",
            ObjectLockMode::Governance => "GOVERNANCE",
        }
    }
}

impl FromStr for ObjectLockMode {
    type Err = ArchiveError;

    /// `compliance` or `governance`, in any case.
    fn from_str(text: &str) -> Result<Self, ArchiveError> {
        if text.eq_ignore_ascii_case("compliance") {
            Ok(ObjectLockMode::Compliance)
        } else if text.eq_ignore_ascii_case("governance") {
            Ok(ObjectLockMode::Governance)
        } else {
            Err(ArchiveError::InvalidObjectLock(format!(
                "unknown mode {text:?}: use compliance or governance"
            )))
        }
    }
}

impl fmt::Display for ObjectLockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectLockMode::Compliance => "compliance",
            ObjectLockMode::Governance => "governance",
        })
    }
}

/// Object Lock retention for the objects an archive run writes: each is
/// kept for `days` days from the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// How S3 enforces it.
    pub mode: ObjectLockMode,
    /// Days from the start of the run, 1 to [`ObjectLock::MAX_DAYS`].
    pub days: u32,
}

impl ObjectLock {
    /// The longest retention accepted: 100 years of 365 days. S3 itself
    /// allows more; a longer one is more likely a typo than a policy.
    pub const MAX_DAYS: u32 = 36_500;

    /// A lock of `days` days in `mode`; fails with
    /// [`ArchiveError::InvalidObjectLock`] unless `days` is 1 to
    /// [`ObjectLock::MAX_DAYS`].
    pub fn new(mode: ObjectLockMode, days: u32) -> Result<Self, ArchiveError> {
        let lock = ObjectLock { mode, days };
        lock.check()?;
        Ok(lock)
    }

    fn check(&self) -> Result<(), ArchiveError> {
        if (1..=Self::MAX_DAYS).contains(&self.days) {
            Ok(())
        } else {
            Err(ArchiveError::InvalidObjectLock(format!(
                "the retention must be 1 to {} days, not {}",
                Self::MAX_DAYS,
                self.days
            )))
        }
    }

    /// The retain-until date for a run started at `now`: `now` plus `days`
    /// days, rounded up to a whole second, as RFC 3339 in UTC with a `Z`
    /// (`2027-02-25T09:30:00Z`), the form S3 takes.
    pub fn retain_until(&self, now: Timestamp) -> Result<String, ArchiveError> {
        self.check()?;
        let until = i64::from(self.days)
            .checked_mul(NANOS_PER_DAY)
            .and_then(|span| now.unix_nanos().checked_add(span))
            .and_then(|nanos| {
                let secs = nanos.div_euclid(NANOS_PER_SEC);
                let up = i64::from(nanos.rem_euclid(NANOS_PER_SEC) != 0);
                (secs + up).checked_mul(NANOS_PER_SEC)
            })
            .ok_or_else(|| {
                ArchiveError::InvalidObjectLock(format!(
                    "{} days after {now} is past the year 2262",
                    self.days
                ))
            })?;
        Ok(Timestamp::from_unix_nanos(until).to_rfc3339())
    }
}

/// The headers of a PUT that locks its object in `mode` until
/// `retain_until` (from [`ObjectLock::retain_until`]).
pub(crate) fn lock_headers(
    mode: ObjectLockMode,
    retain_until: &str,
) -> Result<HeaderMap, ArchiveError> {
    let until = HeaderValue::from_str(retain_until).map_err(|e| {
        ArchiveError::InvalidObjectLock(format!(
            "the date {retain_until:?} is not a header value: {e}"
        ))
    })?;
    let mut headers = HeaderMap::new();
    headers.insert(MODE_HEADER, HeaderValue::from_static(mode.as_header()));
    headers.insert(RETAIN_UNTIL_HEADER, until);
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_in_any_case_and_others_are_refused() {
        assert_eq!(
            "compliance".parse::<ObjectLockMode>().unwrap(),
            ObjectLockMode::Compliance
        );
        assert_eq!(
            "GOVERNANCE".parse::<ObjectLockMode>().unwrap(),
            ObjectLockMode::Governance
        );
        for bad in ["", "legal-hold", "compliant"] {
            let err = bad.parse::<ObjectLockMode>().unwrap_err();
            assert!(
                matches!(err, ArchiveError::InvalidObjectLock(_)),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn days_out_of_range_are_refused() {
        for days in [0, ObjectLock::MAX_DAYS + 1, u32::MAX] {
            let err = ObjectLock::new(ObjectLockMode::Compliance, days).unwrap_err();
            assert!(
                matches!(err, ArchiveError::InvalidObjectLock(_)),
                "{days}: {err}"
            );
            // A lock built field by field is checked when it is used.
            let lock = ObjectLock {
                mode: ObjectLockMode::Compliance,
                days,
            };
            assert!(lock.retain_until(Timestamp::now()).is_err(), "{days}");
        }
        assert!(ObjectLock::new(ObjectLockMode::Governance, ObjectLock::MAX_DAYS).is_ok());
    }

    #[test]
    fn the_date_is_whole_seconds_in_utc_rounded_up() {
        let now = Timestamp::parse_rfc3339("2026-01-26T09:30:00Z").unwrap();
        let lock = ObjectLock::new(ObjectLockMode::Compliance, 30).unwrap();
        assert_eq!(lock.retain_until(now).unwrap(), "2026-02-25T09:30:00Z");
        let now = Timestamp::parse_rfc3339("2026-12-31T23:59:59.000000001Z").unwrap();
        let lock = ObjectLock::new(ObjectLockMode::Compliance, 1).unwrap();
        assert_eq!(lock.retain_until(now).unwrap(), "2027-01-02T00:00:00Z");
        let headers = lock_headers(lock.mode, &lock.retain_until(now).unwrap()).unwrap();
        assert_eq!(headers[MODE_HEADER], "COMPLIANCE");
        assert_eq!(headers[RETAIN_UNTIL_HEADER], "2027-01-02T00:00:00Z");
        assert_eq!(headers.len(), 2);
    }
}
