//! chainlog against peers, with the same events at the same durability.
//!
//! - SQLite (`rusqlite`, bundled), WAL mode, one table (seq, ts, event,
//!   actor, node, resource, ip, outcome, context, hash) with indexes on time
//!   and actor, and the same SHA-256 hash chain computed by the application
//!   (`ChainHash::next` over the same record bytes, `encode_record`).
//!   Durability matched: `synchronous=OFF` for OS buffering;
//!   `synchronous=FULL` with a transaction committed every 10 ms or 1 MiB
//!   for group commit; `synchronous=FULL` with one transaction per append
//!   for Always. SQLite has one writer at a time, so concurrent appenders
//!   share one connection behind a mutex. Verification reads the rows back
//!   in seq order, rebuilds each record's bytes from the columns and
//!   re-hashes the chain. Also run without the secondary indexes.
//! - `commitlog` (a Kafka-style segmented log, no hashing): raw append
//!   throughput at OS buffering only; its `flush` does not `fdatasync` the
//!   segment, so it has no durable policy to compare.
//!
//! Each measurement runs the contenders in turn, in rounds, so that drift on
//! a shared machine hits all of them alike.
//!
//! `cargo bench --bench peers` runs the full comparison (a few minutes);
//! `-- --seconds S` (time per contender and measurement, default 2) and
//! `-- --events N` (records in the verify dataset, default 1,000,000), or
//! the `PEERS_SECONDS` and `PEERS_EVENTS` environment variables, resize it.
//! Without `--bench` (as under `cargo test --benches`) it runs a tiny smoke
//! version.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use chainlog::event::encode_record;
use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir_with, VerifyOptions};
use chainlog::{ChainHash, Durability, Event, Log, LogId, Options, Outcome};
use rusqlite::{params, Connection};

#[path = "support/bench_log.rs"]
mod bench_log;

#[path = "../src/bin/chainlog/bench/events.rs"]
mod events;
#[path = "../src/bin/chainlog/bench/thousands.rs"]
mod thousands;
use thousands::group_thousands;

use events::EventGen;

const EVENT_BYTES: usize = 280;
const BATCH: usize = 256;
const GROUP_COMMIT_DELAY: Duration = Duration::from_millis(10);
const GROUP_COMMIT_BYTES: u64 = 1 << 20;
const ROUNDS: usize = 3;

/// How big and how long.
struct Plan {
    /// Time per contender and measurement (split over the rounds).
    seconds: f64,
    /// Records in the verify dataset.
    verify_events: usize,
    /// Most events one contender appends in one measurement.
    append_cap: u64,
    writers: usize,
    pool_events: usize,
}

fn plan() -> Plan {
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let arg = |name: &str, env: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| std::env::var(env).ok())
    };
    let mut plan = if bench_mode {
        Plan {
            seconds: 2.0,
            verify_events: 1_000_000,
            append_cap: 50_000_000,
            writers: 32,
            pool_events: 65_536,
        }
    } else {
        Plan {
            seconds: 0.15,
            verify_events: 2_000,
            append_cap: 2_000,
            writers: 4,
            pool_events: 2_048,
        }
    };
    if let Some(s) = arg("--seconds", "PEERS_SECONDS").and_then(|s| s.parse().ok()) {
        plan.seconds = s;
    }
    if let Some(n) = arg("--events", "PEERS_EVENTS").and_then(|s| s.parse().ok()) {
        plan.verify_events = n;
    }
    plan
}

/// An amount done in some seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    events: u64,
    seconds: f64,
}

impl Rate {
    fn per_s(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    fn add(&mut self, other: Rate) {
        self.events += other.events;
        self.seconds += other.seconds;
    }
}

/// Something that appends for a slice of time, resumably.
trait Contender {
    fn run(&mut self, budget: Duration, cap: u64) -> Rate;
}

/// Runs each contender for `budget / ROUNDS`, round-robin, ROUNDS times.
fn interleave(contenders: &mut [&mut dyn Contender], budget: Duration, cap: u64) -> Vec<Rate> {
    let mut totals = vec![Rate::default(); contenders.len()];
    for _ in 0..ROUNDS {
        for (total, c) in totals.iter_mut().zip(contenders.iter_mut()) {
            total.add(c.run(budget / ROUNDS as u32, cap / ROUNDS as u64));
        }
    }
    totals
}

/// Runs `writers` threads, each calling `step` (which appends some events
/// and returns how many) until `budget` or `cap` is spent.
fn drive(
    writers: usize,
    budget: Duration,
    cap: u64,
    step: &(dyn Fn(usize, u64) -> u64 + Sync),
) -> Rate {
    let claimed = AtomicU64::new(0);
    let ready = Barrier::new(writers + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (claimed, ready) = (&claimed, &ready);
                s.spawn(move || {
                    ready.wait();
                    let start = Instant::now();
                    let mut done = 0;
                    let mut k = 0;
                    while start.elapsed() < budget && claimed.load(Ordering::Relaxed) < cap {
                        let n = step(w, k);
                        claimed.fetch_add(n, Ordering::Relaxed);
                        done += n;
                        k += 1;
                    }
                    done
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        let events = handles.into_iter().map(|h| h.join().unwrap()).sum();
        Rate {
            events,
            seconds: start.elapsed().as_secs_f64(),
        }
    })
}

/// chainlog with one policy.
struct Chainlog {
    log: Log,
    pool: Arc<Vec<Event>>,
    writers: usize,
    batch: usize,
    offset: AtomicU64,
}

impl Chainlog {
    fn new(
        dir: &Path,
        durability: Durability,
        pool: &Arc<Vec<Event>>,
        writers: usize,
        batch: usize,
    ) -> Self {
        let options = Options {
            durability,
            ..Options::default()
        };
        Chainlog {
            log: Log::create(dir, options).unwrap(),
            pool: pool.clone(),
            writers,
            batch,
            offset: AtomicU64::new(0),
        }
    }
}

impl Contender for Chainlog {
    fn run(&mut self, budget: Duration, cap: u64) -> Rate {
        let (log, pool, batch) = (&self.log, &*self.pool, self.batch);
        let chunks = pool.len() / batch;
        let offset = &self.offset;
        let writers = self.writers;
        let rate = drive(writers, budget, cap, &|w, k| {
            let c = (offset.load(Ordering::Relaxed) as usize + w * chunks / writers + k as usize)
                % chunks;
            let slice = &pool[c * batch..][..batch];
            if batch == 1 {
                log.append(&slice[0]).unwrap();
            } else {
                log.append_batch(slice).unwrap();
            }
            batch as u64
        });
        offset.fetch_add(1, Ordering::Relaxed);
        rate
    }
}

/// The SQLite policies matched to chainlog's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SqlitePolicy {
    /// `synchronous=OFF`.
    None,
    /// `synchronous=FULL`, a commit every 10 ms or 1 MiB.
    GroupCommit,
    /// `synchronous=FULL`, a commit per append.
    Always,
}

/// The application state around a SQLite database: the chain head and the
/// open group-commit transaction.
struct SqliteApp {
    conn: Connection,
    next_seq: u64,
    head: ChainHash,
    policy: SqlitePolicy,
    in_txn: bool,
    txn_started: Instant,
    txn_bytes: u64,
    record: Vec<u8>,
}

fn open_sqlite(path: &Path, indexes: bool, policy: SqlitePolicy) -> SqliteApp {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    let sync = if policy == SqlitePolicy::None {
        "OFF"
    } else {
        "FULL"
    };
    conn.pragma_update(None, "synchronous", sync).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (
            seq INTEGER PRIMARY KEY,
            ts INTEGER NOT NULL,
            event TEXT NOT NULL,
            actor TEXT NOT NULL,
            node TEXT,
            resource TEXT,
            ip BLOB,
            outcome INTEGER NOT NULL,
            context TEXT NOT NULL,
            hash BLOB NOT NULL
        );",
    )
    .unwrap();
    if indexes {
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
             CREATE INDEX IF NOT EXISTS events_actor ON events (actor);",
        )
        .unwrap();
    }
    SqliteApp {
        conn,
        next_seq: 0,
        head: ChainHash::genesis(&LogId([0x51; 16])),
        policy,
        in_txn: false,
        txn_started: Instant::now(),
        txn_bytes: 0,
        record: Vec::with_capacity(1024),
    }
}

const INSERT: &str =
    "INSERT INTO events (seq, ts, event, actor, node, resource, ip, outcome, context, hash)
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

fn ip_bytes(ip: Option<IpAddr>) -> Option<Vec<u8>> {
    ip.map(|ip| match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    })
}

impl SqliteApp {
    fn begin(&mut self) {
        if !self.in_txn {
            self.conn.execute_batch("BEGIN").unwrap();
            self.in_txn = true;
            self.txn_started = Instant::now();
            self.txn_bytes = 0;
        }
    }

    fn commit(&mut self) {
        if self.in_txn {
            self.conn.execute_batch("COMMIT").unwrap();
            self.in_txn = false;
        }
    }

    /// Encodes, chains and inserts the events, then commits as the policy says.
    fn append(&mut self, events: &[Event]) {
        self.begin();
        {
            let mut insert = self.conn.prepare_cached(INSERT).unwrap();
            for event in events {
                self.record.clear();
                encode_record(event, &mut self.record).unwrap();
                let hash = self.head.next(self.next_seq, &self.record);
                let v = chainlog::event::decode_record(1, &self.record).unwrap();
                insert
                    .execute(params![
                        self.next_seq as i64,
                        v.timestamp.unix_nanos(),
                        v.event_type,
                        v.actor,
                        v.node,
                        v.resource,
                        ip_bytes(v.source_ip),
                        matches!(v.outcome, Outcome::Failure) as i64,
                        v.context_json,
                        &hash.0[..],
                    ])
                    .unwrap();
                self.txn_bytes += self.record.len() as u64;
                self.head = hash;
                self.next_seq += 1;
            }
        }
        let commit = match self.policy {
            SqlitePolicy::None | SqlitePolicy::Always => true,
            SqlitePolicy::GroupCommit => {
                self.txn_started.elapsed() >= GROUP_COMMIT_DELAY
                    || self.txn_bytes >= GROUP_COMMIT_BYTES
            }
        };
        if commit {
            self.commit();
        }
    }
}

/// SQLite with one policy; concurrent writers share the connection.
struct Sqlite {
    app: Mutex<SqliteApp>,
    pool: Arc<Vec<Event>>,
    writers: usize,
    batch: usize,
    offset: usize,
}

impl Sqlite {
    fn new(
        path: &Path,
        indexes: bool,
        policy: SqlitePolicy,
        pool: &Arc<Vec<Event>>,
        writers: usize,
        batch: usize,
    ) -> Self {
        Sqlite {
            app: Mutex::new(open_sqlite(path, indexes, policy)),
            pool: pool.clone(),
            writers,
            batch,
            offset: 0,
        }
    }
}

impl Contender for Sqlite {
    fn run(&mut self, budget: Duration, cap: u64) -> Rate {
        let (app, pool, batch, writers, offset) = (
            &self.app,
            &*self.pool,
            self.batch,
            self.writers,
            self.offset,
        );
        let chunks = pool.len() / batch;
        let rate = drive(writers, budget, cap, &|w, k| {
            let c = (offset + w * chunks / writers + k as usize) % chunks;
            app.lock().unwrap().append(&pool[c * batch..][..batch]);
            batch as u64
        });
        // The group-commit policy's last open transaction is committed in
        // the time measured, as chainlog's flusher syncs within 10 ms.
        let start = Instant::now();
        self.app.lock().unwrap().commit();
        self.offset += 1;
        Rate {
            events: rate.events,
            seconds: rate.seconds + start.elapsed().as_secs_f64(),
        }
    }
}

/// commitlog: records (encoded as chainlog encodes them) as messages.
struct Commitlog {
    log: commitlog::CommitLog,
    pool: Arc<Vec<Event>>,
    batch: usize,
    k: usize,
    record: Vec<u8>,
}

impl Commitlog {
    fn new(dir: &Path, pool: &Arc<Vec<Event>>, batch: usize) -> Self {
        let mut options = commitlog::LogOptions::new(dir);
        options.segment_max_bytes(64 << 20);
        Commitlog {
            log: commitlog::CommitLog::new(options).unwrap(),
            pool: pool.clone(),
            batch,
            k: 0,
            record: Vec::with_capacity(1024),
        }
    }
}

impl Contender for Commitlog {
    fn run(&mut self, budget: Duration, cap: u64) -> Rate {
        let chunks = self.pool.len() / self.batch;
        let start = Instant::now();
        let mut events = 0;
        while start.elapsed() < budget && events < cap {
            let c = self.k % chunks;
            self.k += 1;
            let slice = &self.pool[c * self.batch..][..self.batch];
            if self.batch == 1 {
                self.record.clear();
                encode_record(&slice[0], &mut self.record).unwrap();
                self.log.append_msg(&self.record).unwrap();
            } else {
                let mut buf = commitlog::message::MessageBuf::default();
                for e in slice {
                    self.record.clear();
                    encode_record(e, &mut self.record).unwrap();
                    buf.push(&self.record).unwrap();
                }
                self.log.append(&mut buf).unwrap();
            }
            events += self.batch as u64;
        }
        Rate {
            events,
            seconds: start.elapsed().as_secs_f64(),
        }
    }
}

/// One row of the result.
struct Line {
    measurement: String,
    chainlog: f64,
    sqlite: Option<f64>,
    sqlite_no_index: Option<f64>,
    commitlog: Option<f64>,
}

fn fresh(root: &Path, name: &str) -> PathBuf {
    let p = root.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// One append measurement: the same policy for every contender.
struct Case {
    name: String,
    durability: Durability,
    sqlite_policy: SqlitePolicy,
    writers: usize,
    batch: usize,
    with_commitlog: bool,
}

fn append_comparison(root: &Path, plan: &Plan, pool: &Arc<Vec<Event>>, case: &Case) -> Line {
    let Case {
        ref name,
        durability,
        sqlite_policy,
        writers,
        batch,
        with_commitlog,
    } = *case;
    let mut chain = Chainlog::new(&fresh(root, "chainlog"), durability, pool, writers, batch);
    let mut sqlite = Sqlite::new(
        &fresh(root, "sqlite").join("db"),
        true,
        sqlite_policy,
        pool,
        writers,
        batch,
    );
    let mut bare = Sqlite::new(
        &fresh(root, "sqlite-bare").join("db"),
        false,
        sqlite_policy,
        pool,
        writers,
        batch,
    );
    let mut clog = with_commitlog.then(|| Commitlog::new(&fresh(root, "commitlog"), pool, batch));
    let budget = Duration::from_secs_f64(plan.seconds);
    let rates = {
        let mut contenders: Vec<&mut dyn Contender> = vec![&mut chain, &mut sqlite, &mut bare];
        if let Some(c) = clog.as_mut() {
            contenders.push(c);
        }
        interleave(&mut contenders, budget, plan.append_cap)
    };
    let line = Line {
        measurement: name.clone(),
        chainlog: rates[0].per_s(),
        sqlite: Some(rates[1].per_s()),
        sqlite_no_index: Some(rates[2].per_s()),
        commitlog: rates.get(3).map(Rate::per_s),
    };
    chain.log.close().unwrap();
    drop((sqlite, bare, clog));
    for d in ["chainlog", "sqlite", "sqlite-bare", "commitlog"] {
        let _ = std::fs::remove_dir_all(root.join(d));
    }
    line
}

/// Rebuilds a record's bytes from SQLite's columns (the layout of
/// `docs/FORMAT.md`, "Record"), without a JSON round trip.
fn record_from_row(row: &rusqlite::Row<'_>, out: &mut Vec<u8>) -> rusqlite::Result<()> {
    out.clear();
    out.extend_from_slice(&row.get_ref(1)?.as_i64()?.to_le_bytes());
    out.push(row.get_ref(7)?.as_i64()? as u8);
    match row.get_ref(6)?.as_blob_or_null()? {
        None => out.push(0),
        Some(ip) => {
            out.push(if ip.len() == 4 { 4 } else { 6 });
            out.extend_from_slice(ip);
        }
    }
    for col in [2, 3, 4, 5] {
        let text = row.get_ref(col)?.as_str_or_null()?.unwrap_or("");
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    let context = row.get_ref(8)?.as_str()?;
    out.extend_from_slice(&(context.len() as u32).to_le_bytes());
    out.extend_from_slice(context.as_bytes());
    Ok(())
}

/// Reads every row in seq order, rebuilds and re-hashes the chain.
fn verify_sqlite(path: &Path) -> Rate {
    let conn = Connection::open(path).unwrap();
    let start = Instant::now();
    let mut stmt = conn
        .prepare("SELECT seq, ts, event, actor, node, resource, ip, outcome, context, hash FROM events ORDER BY seq")
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut head = ChainHash::genesis(&LogId([0x51; 16]));
    let mut record = Vec::with_capacity(1024);
    let mut events = 0;
    while let Some(row) = rows.next().unwrap() {
        let seq = row.get_ref(0).unwrap().as_i64().unwrap() as u64;
        assert_eq!(seq, events, "a gap in the seqs");
        record_from_row(row, &mut record).unwrap();
        head = head.next(seq, &record);
        assert_eq!(
            row.get_ref(9).unwrap().as_blob().unwrap(),
            &head.0[..],
            "hash mismatch at {seq}"
        );
        events += 1;
    }
    Rate {
        events,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Loads the verify dataset into chainlog and both SQLite variants, then
/// verifies each (in rounds).
fn verify_comparison(root: &Path, plan: &Plan) -> Vec<Line> {
    let chain_dir = fresh(root, "verify-chainlog");
    let sqlite_path = fresh(root, "verify-sqlite").join("db");
    let bare_path = fresh(root, "verify-sqlite-bare").join("db");
    let log = bench_log::unsynced(&chain_dir);
    let mut sqlite = open_sqlite(&sqlite_path, true, SqlitePolicy::None);
    let mut bare = open_sqlite(&bare_path, false, SqlitePolicy::None);
    let mut gen = EventGen::new(0x5eed, EVENT_BYTES);
    let mut left = plan.verify_events;
    while left > 0 {
        let n = left.min(4096);
        let chunk: Vec<Event> = (&mut gen).take(n).collect();
        log.append_batch(&chunk).unwrap();
        sqlite.append(&chunk);
        bare.append(&chunk);
        left -= n;
    }
    log.close().unwrap();
    drop((sqlite, bare));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut totals = [Rate::default(); 4];
    for _ in 0..ROUNDS {
        for threads in [1, cores] {
            let options = VerifyOptions {
                threads,
                ..VerifyOptions::default()
            };
            let start = Instant::now();
            let report = verify_dir_with(&FsStorage, &chain_dir, &options, &mut |_| {}).unwrap();
            assert!(report.is_intact(), "{:?}", report.problems.first());
            totals[if threads == 1 { 0 } else { 1 }].add(Rate {
                events: report.records,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        totals[2].add(verify_sqlite(&sqlite_path));
        totals[3].add(verify_sqlite(&bare_path));
    }
    for d in ["verify-chainlog", "verify-sqlite", "verify-sqlite-bare"] {
        let _ = std::fs::remove_dir_all(root.join(d));
    }
    vec![
        Line {
            measurement: format!("verify ({} records), chainlog 1 thread", plan.verify_events),
            chainlog: totals[0].per_s(),
            sqlite: Some(totals[2].per_s()),
            sqlite_no_index: Some(totals[3].per_s()),
            commitlog: None,
        },
        Line {
            measurement: format!(
                "verify ({} records), chainlog {cores} threads",
                plan.verify_events
            ),
            chainlog: totals[1].per_s(),
            sqlite: Some(totals[2].per_s()),
            sqlite_no_index: Some(totals[3].per_s()),
            commitlog: None,
        },
    ]
}

fn main() {
    let plan = plan();
    let root_parent =
        std::env::var_os("PEERS_WORK_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let root = tempfile::Builder::new()
        .prefix("chainlog-peers-")
        .tempdir_in(root_parent)
        .unwrap();
    let pool: Arc<Vec<Event>> = Arc::new(
        EventGen::new(0xc0ffee, EVENT_BYTES)
            .take(plan.pool_events)
            .collect(),
    );
    let record_bytes: usize = events::encode_all(&pool)
        .iter()
        .map(Vec::len)
        .sum::<usize>()
        / pool.len();
    // Check the rebuilt-record path against the encoder once.
    {
        let path = fresh(root.path(), "check").join("db");
        let mut app = open_sqlite(&path, true, SqlitePolicy::None);
        app.append(&pool[..16]);
        drop(app);
        assert_eq!(verify_sqlite(&path).events, 16);
    }
    let batch_policy = Durability::Batch {
        max_delay: GROUP_COMMIT_DELAY,
        max_bytes: GROUP_COMMIT_BYTES,
    };
    let w = plan.writers;
    let case = |name: String, durability, sqlite_policy, writers, batch, with_commitlog| Case {
        name,
        durability,
        sqlite_policy,
        writers,
        batch,
        with_commitlog,
    };
    let cases = [
        case(
            "append, OS buffering, 1 writer, single".into(),
            Durability::None,
            SqlitePolicy::None,
            1,
            1,
            true,
        ),
        case(
            format!("append, OS buffering, 1 writer, batches of {BATCH}"),
            Durability::None,
            SqlitePolicy::None,
            1,
            BATCH,
            true,
        ),
        case(
            "append, group commit 10 ms / 1 MiB, 1 writer, single".into(),
            batch_policy,
            SqlitePolicy::GroupCommit,
            1,
            1,
            false,
        ),
        case(
            format!("append, group commit 10 ms / 1 MiB, 1 writer, batches of {BATCH}"),
            batch_policy,
            SqlitePolicy::GroupCommit,
            1,
            BATCH,
            false,
        ),
        case(
            "append, Always (fdatasync per append), 1 writer".into(),
            Durability::Always,
            SqlitePolicy::Always,
            1,
            1,
            false,
        ),
        case(
            format!("append, Always (fdatasync per append), {w} writers"),
            Durability::Always,
            SqlitePolicy::Always,
            w,
            1,
            false,
        ),
    ];
    let mut lines = Vec::new();
    for case in &cases {
        eprintln!("peers: {}", case.name);
        lines.push(append_comparison(root.path(), &plan, &pool, case));
    }
    eprintln!("peers: verify");
    lines.extend(verify_comparison(root.path(), &plan));

    println!(
        "chainlog vs peers: {record_bytes} B records on average, {:.2} s per contender and measurement in {ROUNDS} rounds, events/s",
        plan.seconds
    );
    let header = [
        "measurement",
        "chainlog",
        "SQLite",
        "SQLite, no indexes",
        "commitlog",
        "chainlog/SQLite",
        "chainlog/SQLite no idx",
    ];
    let cells: Vec<[String; 7]> = lines
        .iter()
        .map(|l| {
            let opt = |x: Option<f64>| x.map_or_else(|| "-".to_string(), group_thousands);
            let ratio = |x: Option<f64>| {
                x.map_or_else(|| "-".to_string(), |x| format!("{:.1}", l.chainlog / x))
            };
            [
                l.measurement.clone(),
                group_thousands(l.chainlog),
                opt(l.sqlite),
                opt(l.sqlite_no_index),
                opt(l.commitlog),
                ratio(l.sqlite),
                ratio(l.sqlite_no_index),
            ]
        })
        .collect();
    let mut widths = [0; 7];
    for row in std::iter::once(&header.map(String::from)).chain(&cells) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    println!(
        "| {} |",
        header
            .iter()
            .zip(widths)
            .map(|(h, w)| format!("{h:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!(
        "|{}|",
        widths
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 {
                format!("{:-<1$}", "", w + 2)
            } else {
                format!("{:->1$}:", "", w + 1)
            })
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in &cells {
        println!(
            "| {} |",
            row.iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (c, w))| if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                })
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    println!("commitlog: OS buffering only (its flush does not fdatasync the segment file); no hash chain.");
    println!("SQLite: WAL; synchronous=OFF / FULL per policy; concurrent writers share one connection (SQLite has one writer at a time).");
}
