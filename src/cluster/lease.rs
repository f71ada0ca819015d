//! The writer's lease on a workspace: one object, `PREFIX/lease.json`.
//!
//! - **Acquire**: when there is no lease object, create it with
//!   `If-None-Match: *` at epoch 1. When there is one that has expired (by
//!   the contender's clock, [`LeaseOptions::skew_margin_ms`] after its
//!   `expires_at_ms`), or that names the same holder (a restarted
//!   process), replace it with `If-Match` on the ETag just read, at the
//!   next epoch. Whoever's conditional PUT the store accepts holds the
//!   lease; every other contender is refused.
//! - **Renew**: the holder replaces its own object with `If-Match` on the
//!   ETag it last wrote, moving `expires_at_ms` to now + TTL. A refused
//!   renew means the lease was taken over: [`ClusterError::LeaseLost`],
//!   and the [`Lease`] stays lost (every later call fails the same way).
//! - **Write only while valid**: [`Lease::check_valid`] fails once the
//!   holder's own clock is past `expires_at_ms - skew_margin_ms`.
//!
//! # Clocks
//!
//! Expiry is a wall-clock time written by the holder and judged by the
//! contender. With a margin `M`, the holder stops at `expires_at - M` by
//! its clock and a contender takes over at `expires_at + M` by its own: no
//! two nodes believe they hold the lease at once while their clocks
//! disagree by less than `2 M`. If they disagree by more, two holders can
//! overlap for a while; what then keeps the log from forking is the head
//! ([`super::head`]): it moves only by compare-and-swap, a new holder first
//! republishes it under its own epoch, and a writer whose epoch is older
//! than the head's is refused ([`ClusterError::StaleEpoch`]). Clock skew can
//! cost availability (a refused writer) but not a fork.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{parse_json, read_small, system_clock, Clock, ClusterError, LEASE_OBJECT};
use crate::archive::{Bucket, Conditional, ObjectVersion};

/// The `format` member of every lease object.
pub const LEASE_FORMAT: &str = "chainlog-lease/1";
/// The longest holder id.
pub const MAX_HOLDER_BYTES: usize = 128;

/// The lease object, `PREFIX/lease.json`, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRecord {
    /// Always [`LEASE_FORMAT`].
    pub format: String,
    /// Who holds it: a node's id (1 to 128 bytes, no control characters).
    pub holder: String,
    /// Raised by one at every change of holder, starting at 1; every head
    /// the holder publishes carries it.
    pub epoch: u64,
    /// When this epoch began, ms since the Unix epoch (holder's clock).
    pub acquired_at_ms: u64,
    /// When this object was last written (holder's clock).
    pub renewed_at_ms: u64,
    /// Until when the holder may write (holder's clock); others wait a
    /// skew margin past it before taking over.
    pub expires_at_ms: u64,
}

/// How long a lease lasts and how clocks are judged.
#[derive(Clone)]
pub struct LeaseOptions {
    /// How long an acquire or renew holds the lease. Default 10 s.
    pub ttl_ms: u64,
    /// The clock disagreement tolerated between nodes (see the module's
    /// docs). Default 2 s; must be under half the TTL.
    pub skew_margin_ms: u64,
    /// Where "now" comes from. Default: [`system_clock`].
    pub clock: Clock,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl_ms: 10_000,
            skew_margin_ms: 2_000,
            clock: system_clock(),
        }
    }
}

impl std::fmt::Debug for LeaseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseOptions")
            .field("ttl_ms", &self.ttl_ms)
            .field("skew_margin_ms", &self.skew_margin_ms)
            .finish_non_exhaustive()
    }
}

/// A held lease. Dropping it does not release it (it then expires);
/// [`Lease::release`] does.
#[derive(Debug)]
pub struct Lease {
    bucket: Arc<Bucket>,
    options: LeaseOptions,
    record: LeaseRecord,
    version: ObjectVersion,
    /// Set once a renew was refused.
    lost: bool,
}

/// The current lease object and its version, or `None` when there is none.
pub fn read_lease(bucket: &Bucket) -> Result<Option<(LeaseRecord, ObjectVersion)>, ClusterError> {
    let Some(found) = read_small(bucket, LEASE_OBJECT)? else {
        return Ok(None);
    };
    let record: LeaseRecord = parse_json(bucket, LEASE_OBJECT, &found.bytes)?;
    let malformed = |reason: &str| ClusterError::Malformed {
        url: bucket.url(LEASE_OBJECT),
        reason: reason.to_string(),
    };
    if record.format != LEASE_FORMAT {
        return Err(malformed(&format!(
            "format {:?}, not {LEASE_FORMAT:?}",
            record.format
        )));
    }
    if record.epoch == 0 || check_holder(&record.holder).is_err() {
        return Err(malformed("epoch 0 or a bad holder id"));
    }
    Ok(Some((record, found.version)))
}

fn check_holder(holder: &str) -> Result<(), ClusterError> {
    if holder.is_empty() || holder.len() > MAX_HOLDER_BYTES || holder.chars().any(char::is_control)
    {
        return Err(ClusterError::Invalid {
            what: "holder id",
            reason: format!(
                "{holder:?} must be 1 to {MAX_HOLDER_BYTES} bytes without control characters"
            ),
        });
    }
    Ok(())
}

fn check_options(options: &LeaseOptions) -> Result<(), ClusterError> {
    if options.ttl_ms == 0 || options.skew_margin_ms.saturating_mul(2) >= options.ttl_ms {
        return Err(ClusterError::Invalid {
            what: "lease options",
            reason: format!(
                "the TTL ({} ms) must be over twice the skew margin ({} ms)",
                options.ttl_ms, options.skew_margin_ms
            ),
        });
    }
    Ok(())
}

fn encode(record: &LeaseRecord) -> Vec<u8> {
    // A struct of strings and integers always serializes.
    serde_json::to_vec(record).unwrap_or_default()
}

impl Lease {
    /// Takes the lease on the workspace under `bucket`'s prefix for
    /// `holder`: creates it, or takes over an expired one (or this holder's
    /// own) at the next epoch. [`ClusterError::HeldBy`] when another holder's
    /// lease is still running or another contender won the same race.
    pub fn acquire(
        bucket: Arc<Bucket>,
        holder: &str,
        options: LeaseOptions,
    ) -> Result<Lease, ClusterError> {
        check_holder(holder)?;
        check_options(&options)?;
        let now = (options.clock)();
        let current = read_lease(&bucket)?;
        let (epoch, written) = match &current {
            None => {
                let record = new_record(holder, 1, now, &options);
                (
                    1,
                    bucket
                        .put_create(LEASE_OBJECT, encode(&record))?
                        .map_record(record),
                )
            }
            Some((record, version)) => {
                let expired = now >= record.expires_at_ms.saturating_add(options.skew_margin_ms);
                if !expired && record.holder != holder {
                    return Err(held_by(&bucket, record));
                }
                let epoch = record
                    .epoch
                    .checked_add(1)
                    .ok_or_else(|| ClusterError::Malformed {
                        url: bucket.url(LEASE_OBJECT),
                        reason: "the epoch cannot grow".into(),
                    })?;
                let next = new_record(holder, epoch, now, &options);
                (
                    epoch,
                    bucket
                        .put_swap(LEASE_OBJECT, encode(&next), version)?
                        .map_record(next),
                )
            }
        };
        match written {
            Some((record, version)) => Ok(Lease {
                bucket,
                options,
                record,
                version,
                lost: false,
            }),
            // Another contender's PUT came first: report who holds it now.
            None => match read_lease(&bucket)? {
                Some((record, _)) => Err(held_by(&bucket, &record)),
                None => Err(ClusterError::HeldBy {
                    url: bucket.url(LEASE_OBJECT),
                    holder: "(deleted meanwhile)".into(),
                    epoch,
                    expires_at_ms: 0,
                }),
            },
        }
    }

    /// Extends the lease to now + TTL, with `If-Match` on the version this
    /// holder last wrote. A refusal means another node took the lease:
    /// [`ClusterError::LeaseLost`], now and on every later call. A failed
    /// request (network) leaves the lease as it was: renew again, while
    /// [`Lease::check_valid`] still passes.
    pub fn renew(&mut self) -> Result<(), ClusterError> {
        self.rewrite(|record, now, options| {
            record.renewed_at_ms = now;
            record.expires_at_ms = now.saturating_add(options.ttl_ms);
        })
    }

    /// Gives the lease up: writes it with `expires_at_ms` 0 (with
    /// `If-Match`), expired by any clock, so that another node can take
    /// over at once, at the next epoch.
    pub fn release(mut self) -> Result<(), ClusterError> {
        self.rewrite(|record, now, _| {
            record.renewed_at_ms = now;
            record.expires_at_ms = 0;
        })
    }

    fn rewrite(
        &mut self,
        change: impl Fn(&mut LeaseRecord, u64, &LeaseOptions),
    ) -> Result<(), ClusterError> {
        if self.lost {
            return Err(self.lost_error(None));
        }
        // A second attempt only after finding this holder's own earlier
        // write, whose answer was lost (only this holder writes its id at
        // its epoch).
        for _ in 0..2 {
            let now = (self.options.clock)();
            let mut next = self.record.clone();
            change(&mut next, now, &self.options);
            match self
                .bucket
                .put_swap(LEASE_OBJECT, encode(&next), &self.version)?
            {
                Conditional::Written(version) => {
                    self.record = next;
                    self.version = version;
                    return Ok(());
                }
                Conditional::Refused => match read_lease(&self.bucket)? {
                    Some((record, version))
                        if record.holder == self.record.holder
                            && record.epoch == self.record.epoch
                            && version != self.version =>
                    {
                        self.record = record;
                        self.version = version;
                    }
                    other => {
                        let error = self.lost_error(other.map(|(r, _)| r).as_ref());
                        self.lost = true;
                        return Err(error);
                    }
                },
            }
        }
        let error = self.lost_error(None);
        self.lost = true;
        Err(error)
    }

    fn lost_error(&self, now_held: Option<&LeaseRecord>) -> ClusterError {
        ClusterError::LeaseLost {
            url: self.bucket.url(LEASE_OBJECT),
            epoch: self.record.epoch,
            now: match now_held {
                Some(r) => format!("now held by {:?} in epoch {}", r.holder, r.epoch),
                None if self.lost => "it was lost before".into(),
                None => "the lease object is gone".into(),
            },
        }
    }

    /// Fails unless this holder may still write: not lost, and its own
    /// clock before `expires_at_ms - skew_margin_ms`.
    pub fn check_valid(&self) -> Result<(), ClusterError> {
        if self.lost {
            return Err(self.lost_error(None));
        }
        let now = (self.options.clock)();
        if now
            >= self
                .record
                .expires_at_ms
                .saturating_sub(self.options.skew_margin_ms)
        {
            return Err(ClusterError::LeaseExpired {
                epoch: self.record.epoch,
                expires_at_ms: self.record.expires_at_ms,
                skew_margin_ms: self.options.skew_margin_ms,
                now_ms: now,
            });
        }
        Ok(())
    }

    /// The epoch held.
    pub fn epoch(&self) -> u64 {
        self.record.epoch
    }

    /// The lease object as this holder last wrote it.
    pub fn record(&self) -> &LeaseRecord {
        &self.record
    }

    /// The bucket (and workspace prefix) the lease is on.
    pub fn bucket(&self) -> &Arc<Bucket> {
        &self.bucket
    }
}

fn new_record(holder: &str, epoch: u64, now: u64, options: &LeaseOptions) -> LeaseRecord {
    LeaseRecord {
        format: LEASE_FORMAT.into(),
        holder: holder.into(),
        epoch,
        acquired_at_ms: now,
        renewed_at_ms: now,
        expires_at_ms: now.saturating_add(options.ttl_ms),
    }
}

fn held_by(bucket: &Bucket, record: &LeaseRecord) -> ClusterError {
    ClusterError::HeldBy {
        url: bucket.url(LEASE_OBJECT),
        holder: record.holder.clone(),
        epoch: record.epoch,
        expires_at_ms: record.expires_at_ms,
    }
}

trait MapRecord {
    fn map_record(self, record: LeaseRecord) -> Option<(LeaseRecord, ObjectVersion)>;
}

impl MapRecord for Conditional {
    fn map_record(self, record: LeaseRecord) -> Option<(LeaseRecord, ObjectVersion)> {
        match self {
            Conditional::Written(version) => Some((record, version)),
            Conditional::Refused => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_records_round_trip_and_refuse_unknown_members() {
        let record = new_record("node-a", 3, 1_000, &LeaseOptions::default());
        let bytes = encode(&record);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"format":"chainlog-lease/1","holder":"node-a","epoch":3,"acquired_at_ms":1000,"renewed_at_ms":1000,"expires_at_ms":11000}"#
        );
        let back: LeaseRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, record);
        let extra = text.replace("}", r#","lease_for_ever":true}"#);
        assert!(serde_json::from_str::<LeaseRecord>(&extra).is_err());
        let missing = text.replace(r#","epoch":3"#, "");
        assert!(serde_json::from_str::<LeaseRecord>(&missing).is_err());
    }

    #[test]
    fn holder_ids_and_options_are_checked() {
        assert!(check_holder("node-a").is_ok());
        for bad in ["", "a\nb", &"x".repeat(MAX_HOLDER_BYTES + 1)] {
            assert!(
                matches!(check_holder(bad), Err(ClusterError::Invalid { .. })),
                "{bad:?}"
            );
        }
        let options = |ttl_ms, skew_margin_ms| LeaseOptions {
            ttl_ms,
            skew_margin_ms,
            ..LeaseOptions::default()
        };
        assert!(check_options(&options(10_000, 2_000)).is_ok());
        assert!(check_options(&options(0, 0)).is_err());
        assert!(check_options(&options(4_000, 2_000)).is_err());
    }
}
