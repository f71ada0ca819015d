//! The nightly export for data lakes, end to end, against a real S3 server
//! (`s3s-fs`, see tests/support/s3.rs) and read back by DuckDB from PyPI
//! (pinned in tests/openapi/requirements.txt, installed into .venv-tests by
//! scripts/python-tools.sh): the CloudTrail fixture exported with `chainlog
//! lake export`, the objects downloaded and queried with DuckDB's Parquet
//! and JSON readers, rows and failures per day compared with the log; a
//! second run after more appends exports only the new records; an
//! interrupted run is finished by the next; and `chainlog lake verify`
//! detects a changed object, a dropped object and a forged manifest
//! signature.
//!
//! Without s3s-fs or DuckDB the test is skipped with a note, unless
//! `CHAINLOG_REQUIRE_S3` / `CHAINLOG_REQUIRE_DUCKDB` is set (as
//! `scripts/test.sh` does), when it fails.
#![cfg(feature = "lake")]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use chainlog::archive::lake::{
    export_lake, partition_date, verify_lake, LakeManifest, LakeOptions,
};
use chainlog::archive::Bucket;
use chainlog::hash::checkpoint::NoteSigner;
use chainlog::{Event, Log, Options, Outcome, Timestamp};
use serde_json::Value;
use tempfile::TempDir;

#[path = "support/s3.rs"]
mod s3;
use s3::{library_credentials, S3Server, TestS3};

#[path = "support/cloudtrail.rs"]
mod cloudtrail;

#[cfg(feature = "server")]
#[path = "support/server.rs"]
mod server;

const PREFIX: &str = "prod";
const QUERY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lake_query.py");

/// The venv's python with DuckDB, installing it if needed; `None` (after a
/// loud note) when that fails and `CHAINLOG_REQUIRE_DUCKDB` is unset.
fn duckdb_python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let failed = match Command::new(root.join("scripts/python-tools.sh")).output() {
        Ok(out) if out.status.success() => {
            return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        }
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    assert!(
        std::env::var_os("CHAINLOG_REQUIRE_DUCKDB").is_none(),
        "CHAINLOG_REQUIRE_DUCKDB is set but DuckDB could not be installed: {failed}"
    );
    eprintln!(
        "\n*** SKIPPED: DuckDB could not be installed ({failed}); the lake test did not run. ***\n"
    );
    None
}

/// Rows and failures per day (`dt`), as the log holds them.
type PerDay = BTreeMap<String, (u64, u64)>;

fn log_per_day(dir: &Path) -> PerDay {
    let log = Log::open(dir, Options::for_reading()).unwrap();
    let mut days = PerDay::new();
    for record in log.iter_from(0) {
        let record = record.unwrap();
        let day = days
            .entry(partition_date(record.event.timestamp))
            .or_default();
        day.0 += 1;
        day.1 += u64::from(record.event.outcome == Outcome::Failure);
    }
    days
}

struct Lake {
    server: S3Server,
    dir: TempDir,
    keys: TempDir,
    url: String,
}

impl Lake {
    fn run(&self, args: &[&str]) -> Output {
        self.server.run(args)
    }

    /// `chainlog --dir LOG lake export --json`.
    fn export_output(&self) -> Output {
        let dir = self.dir.path().to_str().unwrap();
        let key = self.keys.path().join("secret.key");
        self.run(&[
            "--dir",
            dir,
            "lake",
            "export",
            "--to",
            &self.url,
            "--checkpoint-key",
            key.to_str().unwrap(),
            "--json",
        ])
    }

    fn export(&self) -> Value {
        let out = self.export_output();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `chainlog lake verify --json`: (exit code, report).
    fn verify(&self, with_log: bool) -> (i32, Value) {
        let key = self.keys.path().join("public.key");
        let mut args = vec![
            "lake",
            "verify",
            "--from",
            &self.url,
            "--key",
            key.to_str().unwrap(),
            "--json",
        ];
        let dir = self.dir.path().to_str().unwrap();
        if with_log {
            args.extend(["--log", dir]);
        }
        let out = self.run(&args);
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap(), report)
    }

    fn problem_kinds(report: &Value) -> Vec<String> {
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["kind"].as_str().unwrap().to_string())
            .collect()
    }

    /// Downloads every object the newest manifest lists into a new
    /// directory (keys kept as paths), as a lake user copies them.
    fn download(&self) -> TempDir {
        library_credentials();
        let bucket = Bucket::connect(&self.server.target(PREFIX), true).unwrap();
        let names: Vec<String> = bucket
            .list("lake/manifest")
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|n| n.ends_with(".json"))
            .collect();
        let newest = names.iter().max().unwrap();
        let manifest = LakeManifest::parse(
            &bucket.get(&format!("lake/manifest/{newest}")).unwrap(),
            newest,
        )
        .unwrap();
        let copy = tempfile::tempdir().unwrap();
        for object in &manifest.objects {
            let path = copy.path().join(&object.key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bucket.get(&object.key).unwrap()).unwrap();
        }
        copy
    }

    /// Queries a copy with DuckDB and checks both formats against the log,
    /// day by day. Returns DuckDB's answer.
    fn query_matches_log(&self, python: &Path) -> Value {
        let copy = self.download();
        let out = Command::new(python)
            .arg(QUERY)
            .arg(copy.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "DuckDB: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        let expected = log_per_day(self.dir.path());
        let total: u64 = expected.values().map(|d| d.0).sum();
        for format in ["parquet", "jsonl"] {
            let got = &answer[format];
            let days: PerDay = got["days"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(day, c)| {
                    (
                        day.clone(),
                        (c["rows"].as_u64().unwrap(), c["failures"].as_u64().unwrap()),
                    )
                })
                .collect();
            assert_eq!(days, expected, "{format}: rows and failures per day");
            assert_eq!(got["rows"], total, "{format}");
            assert_eq!(got["distinct_seqs"], total, "{format}: every seq once");
            assert_eq!(got["min_seq"], 0, "{format}");
            assert_eq!(got["max_seq"], total - 1, "{format}");
        }
        answer
    }
}

/// A log of the 2,900 CloudTrail events in `dir`.
fn cloudtrail_log(dir: &Path) {
    let log = Log::create(dir, Options::default()).unwrap();
    let events: Vec<Event> = cloudtrail::cloudtrail_records()
        .iter()
        .map(cloudtrail::to_event)
        .collect();
    assert_eq!(events.len(), 2_900);
    for batch in events.chunks(500) {
        log.append_batch(batch).unwrap();
    }
    log.close().unwrap();
}

/// A checkpoint key pair: `secret.key` (mode 0600) and `public.key`.
fn key_files() -> TempDir {
    let keys = tempfile::tempdir().unwrap();
    let signer = NoteSigner::from_seed("lake-test", [5; 32]).unwrap();
    let secret = keys.path().join("secret.key");
    std::fs::write(&secret, signer.to_secret_text()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(keys.path().join("public.key"), signer.verifier().to_text()).unwrap();
    keys
}

fn setup() -> Option<(Lake, PathBuf)> {
    let server = S3Server::start()?;
    let python = duckdb_python()?;
    let dir = tempfile::tempdir().unwrap();
    cloudtrail_log(dir.path());
    let url = format!("s3://{}/{PREFIX}", s3::BUCKET);
    Some((
        Lake {
            server,
            dir,
            keys: key_files(),
            url,
        },
        python,
    ))
}

/// The object files under the lake in the server's storage, with their bytes.
fn stored(lake: &Lake, under: &str) -> BTreeMap<String, Vec<u8>> {
    let root = lake.server.objects_dir(PREFIX);
    lake.server
        .objects(PREFIX)
        .into_iter()
        .filter(|name| name.starts_with(under))
        .map(|name| {
            let bytes = std::fs::read(root.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn cloudtrail_export_is_queried_by_duckdb_and_checked() {
    let Some((lake, python)) = setup() else {
        return;
    };
    // First run: the whole fixture.
    let first = lake.export();
    assert_eq!(first["exported"], serde_json::json!([0, 2899]));
    assert_eq!(first["rows"], 2900);
    let answer = lake.query_matches_log(&python);
    let types = &answer["parquet"]["types"];
    assert_eq!(types["seq"], "BIGINT");
    assert_eq!(types["timestamp"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(types["context"], "VARCHAR");
    let (code, report) = lake.verify(true);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["checkpoint_size"], 2900);
    assert_eq!(report["rows_matched_to_log"], 2900);
    assert_eq!(report["rows_checked"], serde_json::json!([2900, 2900]));

    // More appends, on other days (one late event for an earlier day): the
    // second run writes only them, and no object of the first changes.
    let objects_before = stored(&lake, "lake/jsonl/");
    let parquet_before = stored(&lake, "lake/parquet/");
    let log = Log::open(lake.dir.path(), Options::default()).unwrap();
    for (i, when) in [
        "2023-07-11T08:00:00Z",
        "2023-07-09T23:59:59Z",
        "2023-07-12T00:00:00.5Z",
    ]
    .iter()
    .cycle()
    .take(30)
    .enumerate()
    {
        let mut event = Event::new(
            Timestamp::parse_rfc3339(when).unwrap(),
            "auth.login_failed",
            "mallory",
        );
        event.outcome = if i % 3 == 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        log.append(&event).unwrap();
    }
    drop(log);
    let second = lake.export();
    assert_eq!(second["exported"], serde_json::json!([2900, 2929]));
    assert_eq!(second["rows"], 30);
    assert_eq!(second["objects_written"], 6, "three days, two formats");
    let after = stored(&lake, "lake/jsonl/");
    for (name, bytes) in &objects_before {
        assert_eq!(after.get(name), Some(bytes), "{name} was rewritten");
    }
    assert_eq!(after.len(), objects_before.len() + 3);
    let parquet_after = stored(&lake, "lake/parquet/");
    assert!(parquet_before
        .iter()
        .all(|(n, b)| parquet_after.get(n) == Some(b)));
    let answer = lake.query_matches_log(&python);
    assert_eq!(answer["parquet"]["days"].as_object().unwrap().len(), 4);
    assert_eq!(lake.verify(true).0, 0);
    // Nothing new: nothing written.
    let third = lake.export();
    assert_eq!(third["exported"], Value::Null);
    assert_eq!(third["objects_written"], 0);

    // An interrupted run (its objects written, its manifest not): the next
    // run writes the same objects, adopts them, and finishes it.
    let manifests = stored(&lake, "lake/manifest/");
    let root = lake.server.objects_dir(PREFIX);
    for name in manifests.keys().filter(|n| n.contains("2929")) {
        std::fs::remove_file(root.join(name)).unwrap();
    }
    let redone = lake.export();
    assert_eq!(redone["exported"], serde_json::json!([2900, 2929]));
    assert_eq!(redone["objects_written"], 0);
    assert_eq!(redone["adopted"].as_array().unwrap().len(), 6);
    assert_eq!(
        stored(&lake, "lake/manifest/"),
        manifests,
        "the same manifest, byte for byte"
    );
    assert_eq!(lake.verify(false).0, 0);

    // A changed object.
    let (name, bytes) = parquet_after.iter().next().unwrap();
    let mut changed = bytes.clone();
    let mid = changed.len() / 2;
    changed[mid] ^= 1;
    std::fs::write(root.join(name), &changed).unwrap();
    let (code, report) = lake.verify(false);
    assert_eq!(code, 1);
    // Its rows are not trusted either: they are missing from that format.
    assert_eq!(
        Lake::problem_kinds(&report),
        ["digest_mismatch", "seq_gap"],
        "{report}"
    );
    std::fs::write(root.join(name), bytes).unwrap();
    assert_eq!(lake.verify(false).0, 0);

    // A dropped object: missing, and its seqs missing from that format.
    let (name, bytes) = after.iter().next().unwrap();
    std::fs::remove_file(root.join(name)).unwrap();
    let (code, report) = lake.verify(false);
    assert_eq!(code, 1);
    let kinds = Lake::problem_kinds(&report);
    assert!(kinds.contains(&"object_missing".to_string()), "{report}");
    assert!(kinds.contains(&"seq_gap".to_string()), "{report}");
    std::fs::write(root.join(name), bytes).unwrap();

    // A manifest whose signature is not by the key: one that drops an
    // object from the list, signed by another key.
    let newest = manifests
        .keys()
        .filter(|n| n.ends_with(".json"))
        .max()
        .unwrap()
        .clone();
    let mut manifest = LakeManifest::parse(&manifests[&newest], &newest).unwrap();
    manifest.objects.pop();
    let forger = NoteSigner::from_seed("lake-test", [6; 32]).unwrap();
    let (json, note) = manifest.sign(&forger).unwrap();
    std::fs::write(root.join(&newest), json).unwrap();
    std::fs::write(root.join(newest.replace(".json", ".sig")), note).unwrap();
    let (code, report) = lake.verify(false);
    assert_eq!(code, 1);
    assert_eq!(Lake::problem_kinds(&report), ["bad_signature"], "{report}");
    // The original signature over the changed manifest fails too.
    std::fs::write(
        root.join(newest.replace(".json", ".sig")),
        &manifests[&newest.replace(".json", ".sig")],
    )
    .unwrap();
    let (code, report) = lake.verify(false);
    assert_eq!(code, 1);
    assert_eq!(Lake::problem_kinds(&report), ["bad_signature"], "{report}");
    // And an export refuses to continue a lake it cannot trust.
    let out = lake.export_output();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `chainlog serve --lake-to` exports every workspace's log beside the
/// archive when it starts, and the export verifies against the log.
#[cfg(feature = "server")]
#[test]
fn the_server_exports_every_workspace_to_the_lake() {
    let Some(s3) = S3Server::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let workspace = data.join("workspaces").join("acme");
    std::fs::create_dir_all(&workspace).unwrap();
    cloudtrail_log(&workspace);
    let keys = key_files();
    let secret = keys.path().join("secret.key");
    let archive = format!("s3://{}/archive", s3::BUCKET);
    let lake = format!("s3://{}/lake-srv", s3::BUCKET);
    let serve = server::TestServer::start_with_env(
        &data,
        &[
            "--checkpoint-key",
            secret.to_str().unwrap(),
            "--archive-to",
            &archive,
            "--lake-to",
            &lake,
            "--archive-every",
            "1h",
        ],
        &s3.env(),
    );
    // The line is printed once the run's manifest is written.
    let done = "exported 2900 record(s) of workspaces/acme";
    let deadline = Instant::now() + Duration::from_secs(120);
    while !serve.stderr().contains(done) {
        assert!(
            Instant::now() < deadline,
            "no lake export: {}",
            serve.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let manifests: Vec<String> = s3
        .objects("lake-srv/workspaces/acme/lake/manifest")
        .into_iter()
        .filter(|o| o.ends_with(".json"))
        .collect();
    assert_eq!(manifests, ["00000000000000002899.json"]);
    let (status, stderr) = serve.stop();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let public = keys.path().join("public.key");
    let out = s3.run(&[
        "lake",
        "verify",
        "--from",
        &format!("{lake}/workspaces/acme"),
        "--key",
        public.to_str().unwrap(),
        "--log",
        workspace.to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["rows_matched_to_log"], 2900);
}

/// Objects are cut at `max_rows_per_object` and when the rows held in
/// memory pass `max_buffered_bytes`; the lake stays complete either way.
#[test]
fn objects_are_cut_by_rows_and_by_memory() {
    let Some(s3) = S3Server::start() else {
        return;
    };
    library_credentials();
    let dir = tempfile::tempdir().unwrap();
    cloudtrail_log(dir.path());
    let signer = NoteSigner::from_seed("lake-test", [5; 32]).unwrap();
    for (prefix, rows, bytes) in [
        ("by-rows", 1_000, 64 << 20),
        ("by-memory", 100_000, 256 << 10),
    ] {
        let mut options = LakeOptions::new(signer.clone());
        options.max_rows_per_object = rows;
        options.max_buffered_bytes = bytes;
        let target = s3.target(prefix);
        let outcome = export_lake(dir.path(), &target, &options, &mut |_, _| {}).unwrap();
        assert_eq!(outcome.rows, 2_900);
        let report = verify_lake(&target, &signer.verifier(), None).unwrap();
        assert!(report.is_intact(), "{report:?}");
        let parquet: Vec<String> = s3
            .objects(prefix)
            .into_iter()
            .filter(|o| o.ends_with(".parquet"))
            .collect();
        // One day: 3 objects of 1,000 rows or fewer; or one per flush.
        assert!(parquet.len() >= 3, "{prefix}: {parquet:?}");
        assert_eq!(outcome.objects_written, 2 * parquet.len());
    }
}
