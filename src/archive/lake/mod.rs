//! The nightly export for SIEMs and data lakes (feature `lake`): the log's rows as gzip
//! JSON Lines and Parquet objects beside the archive, listed in a signed manifest. It
//! uses the archive's bucket and create-only writes, the query layer's rows, and `hash`.
//!
//! # Layout
//!
//! Under `s3://BUCKET/PREFIX/lake/` (docs/LAKE.md has the schemas and how
//! to check a copy by hand):
//!
//! | key | what |
//! |---|---|
//! | `jsonl/dt=YYYY-MM-DD/F-L.jsonl.gz` | rows of one date, seqs F..=L (20 digits each), as `chainlog export --format jsonl` |
//! | `parquet/dt=YYYY-MM-DD/F-L.parquet` | the same rows, typed columns |
//! | `runs/F.json` | the seq range a run starting at F exports, written first |
//! | `manifest/L.json` | every object of the lake, with a signed checkpoint of size L+1; written last |
//! | `manifest/L.sig` | a signed note over the manifest's SHA-256 |
//!
//! The partition is the UTC date of the event's `timestamp`, the time
//! analysts filter on; late events (an old timestamp appended today) go
//! into a new object of their old partition, never into an existing one.
//!
//! ```no_run
//! use chainlog::archive::{ArchiveTarget, lake::{export_lake, LakeOptions}};
//! use chainlog::hash::checkpoint::NoteSigner;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let signer = NoteSigner::parse(&std::fs::read_to_string("checkpoint.key")?)?;
//! let target = ArchiveTarget::parse("s3://audit-lake/prod")?;
//! let outcome = export_lake("/var/lib/audit".as_ref(), &target, &LakeOptions::new(signer), &mut |_, _| {})?;
//! println!("exported {} rows", outcome.rows);
//! # Ok(())
//! # }
//! ```

mod export;
mod jsonl;
mod manifest;
mod parquet_file;
mod rows;
mod verify;

pub use export::{export_lake, LakeOptions, LakeOutcome};
pub use jsonl::{gzip_lines, read_jsonl_gz};
pub use manifest::{
    run_marker_key, LakeFormat, LakeManifest, LakeObject, ManifestRefused, RunMarker, LAKE_DIR,
    LAKE_MANIFEST_DIR, LAKE_MANIFEST_FORMAT, LAKE_RUNS_DIR,
};
pub use parquet_file::{read_parquet, write_parquet, PARQUET_SCHEMA};
pub use rows::{partition_date, LakeRow, RowError};
pub use verify::{verify_lake, LakeProblem, LakeProblemKind, LakeReport};
