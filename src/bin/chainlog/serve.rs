//! `chainlog serve`: the HTTP API and the dashboard (see `chainlog::server`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chainlog::server::audit::AuditPolicy;
use chainlog::server::keys::AdminKeys;
use chainlog::server::{shutdown_signal, Limits, Server, ServerConfig, TlsFiles};
use clap::Args;

use crate::error::CliError;

/// `chainlog serve`'s arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The data directory: keys.json, workspaces/<name>/, server-log/.
    /// Created if missing.
    #[arg(long, value_name = "DIR", env = "CHAINLOG_DATA")]
    data: PathBuf,
    /// Address and port to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Sign checkpoints on request (GET …/checkpoint) with this secret key
    /// from `chainlog keygen` (mode 0600).
    #[arg(long, value_name = "FILE")]
    checkpoint_key: Option<PathBuf>,
    /// Origin prefix of signed checkpoints: `<PREFIX>/<log id>`.
    #[arg(long, value_name = "PREFIX", default_value = "chainlog")]
    checkpoint_origin: String,
    /// Submit each workspace's checkpoints to this witness (C2SP
    /// tlog-witness): its submission URL and public key (repeatable; needs
    /// --checkpoint-key). The newest checkpoint a quorum cosigned is served
    /// at GET …/checkpoint/witnessed and goes into evidence packs.
    #[arg(long = "witness", value_name = "URL=VKEY", requires = "checkpoint_key")]
    witnesses: Vec<String>,
    /// Store a checkpoint only when at least N witnesses cosigned it.
    /// Default: all of them.
    #[arg(long, value_name = "N", requires = "witnesses")]
    witness_quorum: Option<usize>,
    /// Time between two submissions (a workspace is submitted only when its
    /// log grew): 300ms, 10s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "5m", requires = "witnesses", value_parser = parse_timeout)]
    witness_every: Duration,
    /// Largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Longest a request may take until its answer starts, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    request_timeout: u64,
    /// Longest a client may take to send a request's headers, from their
    /// first byte (and a TLS handshake, from the connection's start); then
    /// the connection is closed. A number of seconds, or with ms/s/m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// Longest a request body may take to arrive after the headers; then
    /// the answer is 408 and the connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    body_timeout: Duration,
    /// Longest a connection may stay open with no request in it (before
    /// the first, or between two); then it is closed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// Connections open at once. A connection over the limit is closed as
    /// soon as it is accepted, unread. Capped so that a quarter of the file
    /// descriptor limit (ulimit -n; at least 32) stays free for the logs.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Bytes of request bodies being read at once, across all connections
    /// (at least --max-body-bytes). A body that finds no room before its
    /// --body-timeout is answered 503 with Retry-After.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    max_body_bytes_in_flight: usize,
    /// Who may create, rotate and revoke admin keys: `any` (admin keys
    /// over HTTP too) or `local-only` (only `chainlog apikey` on this
    /// machine; over HTTP an admin key can then manage only append and
    /// read keys, so a stolen one cannot mint admin keys or lock the real
    /// ones out).
    #[arg(long, value_enum, value_name = "WHO", default_value_t = AdminKeysArg::Any)]
    admin_keys: AdminKeysArg,
    /// Share the data directory read-only with this group (a name or a
    /// gid): it becomes 2750 and what the server creates in it 0640/0750.
    /// Default: private, files 0600 and directories 0700.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Serve a data directory that belongs to another user (refused by
    /// default: files written now would belong to the wrong user).
    #[arg(long)]
    allow_other_owner: bool,
    /// The window the refusal and read budgets below count in (they say
    /// "per minute" for the default): summaries are written when it ends.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_timeout)]
    audit_window: Duration,
    /// Refusals without a valid key (missing or bad key, unknown route, bad
    /// request head) recorded one by one per client address and minute; the
    /// rest are counted exactly in one `auth.failed_summary` per log and
    /// minute.
    #[arg(long, value_name = "N", default_value_t = 10)]
    refusals_per_address: u32,
    /// Refusals without a valid key recorded one by one per log (a
    /// workspace's, or the server's) and minute, whatever their addresses.
    #[arg(long, value_name = "N", default_value_t = 100)]
    refusals_per_log: u32,
    /// Refusals without a valid key recorded one by one per minute in all
    /// logs together.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    refusals_total: u32,
    /// Security events (a valid key used outside its workspace or scope)
    /// recorded one by one per key and minute, whatever other clients do;
    /// past it they are counted exactly in an `access.denied_summary`.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    security_events_per_key: u32,
    /// Reads (queries, exports, verifications, key listings, sign-ins)
    /// recorded one by one per key, log and minute; past it they are
    /// counted exactly (reads, rows, bytes) in an `access.read_summary`.
    #[arg(long, value_name = "N", default_value_t = 10)]
    reads_per_key: u32,
    /// Only the admin keys of these workspaces (comma-separated) may read
    /// the server's log (GET /v1/server-log/events); default: every admin
    /// key.
    #[arg(long, value_name = "WORKSPACE,...", value_delimiter = ',')]
    server_log_readers: Option<Vec<String>>,
    /// Exports streaming at once, server-wide; one more is answered 503
    /// with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    max_exports: u32,
    /// Exports streaming at once for one workspace, so that one tenant's
    /// slow readers leave the others room (at most --max-exports).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    max_exports_per_workspace: u32,
    /// Verifications running at once, server-wide (each uses up to 2
    /// cores).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    max_verifies: u32,
    /// Verifications running at once for one workspace (at most
    /// --max-verifies).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    max_verifies_per_workspace: u32,
    /// Verifications of one workspace waiting for a slot; one more is
    /// answered 503 with Retry-After. Another workspace's verification
    /// never waits behind this queue.
    #[arg(long, value_name = "N", default_value_t = 2)]
    max_queued_verifies_per_workspace: u32,
    /// Queries (GET …/events, …/events/SEQ) running at once, server-wide,
    /// each on a thread.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_queries: u32,
    /// Queries running at once for one workspace (at most --max-queries).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    max_queries_per_workspace: u32,
    /// Queries of one workspace waiting for a slot; one more is answered
    /// 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_queued_queries_per_workspace: u32,
    /// Serve GET /metrics (Prometheus text format) on this address, a
    /// listener of its own without keys or TLS: bind it to loopback or a
    /// network only the monitoring system reaches. It names every
    /// workspace. Default: no metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// How long the answer to a POST with an Idempotency-Key is kept for
    /// its retries, in memory (a restart forgets it): 90s, 30m, 24h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_keep)]
    idempotency_ttl: Duration,
    /// Most Idempotency-Key answers kept per workspace; when more arrive,
    /// the oldest is dropped first.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    idempotency_keys: u32,
    /// Archive every workspace's log, and the server's, to
    /// s3://BUCKET/PREFIX (under PREFIX/workspaces/<name> and
    /// PREFIX/server-log): when the server starts, then every
    /// --archive-every. Credentials from the AWS environment variables.
    #[cfg(feature = "s3")]
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    archive_to: Option<String>,
    /// Time between archive runs (30m, 12h, 24h, 7d).
    #[cfg(feature = "s3")]
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "24h",
        requires = "archive_to",
        value_parser = crate::archive::parse_every
    )]
    archive_every: Duration,
    /// The archive's S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS).
    #[cfg(feature = "s3")]
    #[arg(long, value_name = "URL", requires = "archive_to")]
    archive_endpoint: Option<String>,
    /// The archive bucket's region (default: AWS_REGION, else us-east-1).
    #[cfg(feature = "s3")]
    #[arg(long, value_name = "REGION", requires = "archive_to")]
    archive_region: Option<String>,
    /// Write archived objects with S3 Object Lock for N days (1 to 36500),
    /// as `chainlog archive --object-lock-days`.
    #[cfg(feature = "s3")]
    #[arg(long, value_name = "N", requires = "archive_to")]
    archive_object_lock_days: Option<u32>,
    /// The Object Lock mode: compliance or governance.
    #[cfg(feature = "s3")]
    #[arg(
        long,
        value_name = "MODE",
        default_value = "compliance",
        requires = "archive_object_lock_days",
        value_parser = crate::archive::parse_lock_mode
    )]
    archive_object_lock_mode: chainlog::archive::ObjectLockMode,
    /// With each archive run, also export every log's new records to
    /// s3://BUCKET/PREFIX/…/lake/ as gzip JSON Lines and Parquet with a
    /// signed manifest (as `chainlog lake export`; same endpoint and region
    /// as the archive). Needs --checkpoint-key, which signs the manifests.
    #[cfg(feature = "lake")]
    #[arg(long, value_name = "s3://BUCKET/PREFIX", requires_all = ["archive_to", "checkpoint_key"])]
    lake_to: Option<String>,
    /// Boxed: the serve command would otherwise be the largest by far.
    #[cfg(feature = "s3")]
    #[command(flatten)]
    cluster: Box<ClusterArgs>,
}

/// `chainlog serve --bucket …`: serving a cluster over a bucket.
#[cfg(feature = "s3")]
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Serve every workspace from s3://BUCKET/PREFIX (under PREFIX/ws/<name>/),
    /// as one node of a cluster: appends are answered once they are in the
    /// bucket, each workspace is held by one node under a lease, requests
    /// for a workspace held elsewhere are forwarded to its holder. Needs
    /// --node-id, --advertise and --checkpoint-key (or --read-only).
    /// Credentials from the AWS environment variables.
    #[arg(long, value_name = "s3://BUCKET/PREFIX", conflicts_with = "archive_to")]
    bucket: Option<String>,
    /// The bucket's S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS).
    #[arg(long, value_name = "URL", requires = "bucket")]
    endpoint: Option<String>,
    /// The bucket's region (default: AWS_REGION, else us-east-1).
    #[arg(long, value_name = "REGION", requires = "bucket")]
    region: Option<String>,
    /// This node's id, unique in the cluster: A-Z, a-z, 0-9, '.', '_', '-'.
    #[arg(long, value_name = "NAME", requires = "bucket")]
    node_id: Option<String>,
    /// Where the other nodes reach this one (they forward requests to it):
    /// http://HOST:PORT.
    #[arg(long, value_name = "URL", requires = "bucket")]
    advertise: Option<String>,
    /// How long a workspace's lease lasts without renewal: a dead node's
    /// workspaces move after about this long (plus a fifth of it).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    lease_ttl: Duration,
    /// Upload what was appended to the bucket at least this often.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_timeout)]
    flush_interval: Duration,
    /// With --bucket: the size of the segment files a workspace's log
    /// creates from now on (as `chainlog init --segment-bytes`); a segment
    /// rebuilt from the bucket keeps its own.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = crate::parse_size)]
    segment_bytes: u64,
    /// Answer an append 503 when the bucket has not taken it after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    ack_timeout: Duration,
    /// Serve every workspace of --bucket read-only, following the bucket
    /// (no lease taken; appends and changes are refused with 405). Needs
    /// --checkpoint-public-key.
    #[arg(long, requires_all = ["bucket", "checkpoint_public_key"])]
    read_only: bool,
    /// With --read-only: the public (verifier) key of the checkpoint key
    /// that signs the heads, as `chainlog keygen --public-key` wrote it.
    #[arg(
        long = "checkpoint-public-key",
        visible_alias = "checkpoint-vkey",
        value_name = "FILE",
        requires = "read_only"
    )]
    checkpoint_public_key: Option<PathBuf>,
    /// With --read-only: read each workspace's head this often.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_timeout)]
    poll_interval: Duration,
    /// With --read-only: the most each workspace's cache keeps on disk;
    /// archived segments beyond it are read from the bucket.
    #[arg(long, value_name = "BYTES", default_value = "1GiB", value_parser = crate::parse_size)]
    cache_bytes: u64,
}

/// The cluster the arguments ask to serve from, if any.
#[cfg(feature = "s3")]
fn cluster_config(
    args: &ClusterArgs,
    signer: Option<&chainlog::hash::checkpoint::NoteSigner>,
    origin: &str,
) -> Result<Option<chainlog::server::cluster::ClusterConfig>, CliError> {
    use chainlog::cluster::{FollowOptions, ReplicationOptions};
    use chainlog::server::cluster::{ClusterConfig, ReadOnlyConfig, Role, WriterConfig};
    let Some(url) = &args.bucket else {
        return Ok(None);
    };
    let target = s3_target(url, &args.endpoint, &args.region)?;
    let role = if args.read_only {
        let Some(path) = &args.checkpoint_public_key else {
            return Err(CliError::Usage(
                "--read-only needs --checkpoint-public-key FILE (the key that checks the heads)"
                    .into(),
            ));
        };
        Role::ReadOnly(ReadOnlyConfig {
            verifier: crate::keys::load_verifier(path)?,
            follow: FollowOptions {
                poll_interval: args.poll_interval,
                cache_bytes: args.cache_bytes,
            },
        })
    } else {
        let missing = |flag: &str| {
            CliError::Usage(format!(
                "--bucket needs {flag} (or --read-only for a read replica)"
            ))
        };
        Role::Writer(WriterConfig {
            node_id: args
                .node_id
                .clone()
                .ok_or_else(|| missing("--node-id NAME"))?,
            advertise: args
                .advertise
                .clone()
                .ok_or_else(|| missing("--advertise http://HOST:PORT"))?,
            signer: signer
                .cloned()
                .ok_or_else(|| missing("--checkpoint-key FILE (it signs the heads)"))?,
            lease_ttl: args.lease_ttl,
            segment_bytes: args.segment_bytes,
            replication: ReplicationOptions {
                flush_interval: args.flush_interval,
                ack_timeout: args.ack_timeout,
                origin_prefix: origin.to_string(),
                ..ReplicationOptions::default()
            },
        })
    };
    Ok(Some(ClusterConfig { target, role }))
}

/// `--admin-keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdminKeysArg {
    /// Admin keys may be managed over HTTP too.
    Any,
    /// Admin keys are managed only with `chainlog apikey` on the machine.
    LocalOnly,
}

/// The id of the group `--group` names.
pub fn group_arg(name: &str) -> Result<u32, CliError> {
    chainlog::storage::perms::group_id(name).ok_or_else(|| {
        CliError::Usage(format!(
            "--group {name:?}: no such group in /etc/group (give a name or a numeric gid)"
        ))
    })
}

/// `s3://BUCKET/PREFIX` reached at `endpoint` in `region` (each `None`:
/// from the environment).
#[cfg(feature = "s3")]
fn s3_target(
    url: &str,
    endpoint: &Option<String>,
    region: &Option<String>,
) -> Result<chainlog::archive::ArchiveTarget, CliError> {
    Ok(chainlog::archive::ArchiveTarget::parse(url)
        .map_err(|e| CliError::Usage(e.to_string()))?
        .with_endpoint(endpoint.clone())
        .with_region(region.clone()))
}

/// The archive schedule the arguments ask for, if any. Archived checkpoints
/// are signed with the server's checkpoint key, when it has one.
#[cfg(feature = "s3")]
fn archive_schedule(
    args: &ServeArgs,
    signer: Option<&chainlog::hash::checkpoint::NoteSigner>,
) -> Result<Option<chainlog::server::archiving::ArchiveSchedule>, CliError> {
    use chainlog::archive::{ArchiveOptions, ObjectLock};
    let Some(url) = &args.archive_to else {
        return Ok(None);
    };
    let target = s3_target(url, &args.archive_endpoint, &args.archive_region)?;
    let object_lock = args
        .archive_object_lock_days
        .map(|days| ObjectLock::new(args.archive_object_lock_mode, days))
        .transpose()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Some(chainlog::server::archiving::ArchiveSchedule {
        target,
        every: args.archive_every,
        options: ArchiveOptions {
            checkpoint_signer: signer.cloned(),
            origin_prefix: args.checkpoint_origin.clone(),
            object_lock,
            ..ArchiveOptions::default()
        },
        #[cfg(feature = "lake")]
        lake: match (&args.lake_to, signer) {
            (Some(url), Some(signer)) => {
                let target = s3_target(url, &args.archive_endpoint, &args.archive_region)?;
                let mut options = chainlog::archive::lake::LakeOptions::new(signer.clone());
                options.origin_prefix = args.checkpoint_origin.clone();
                Some((target, options))
            }
            _ => None,
        },
    }))
}

/// The witnesses `--witness` names, with their quorum, if any.
fn witness_schedule(
    witnesses: &[String],
    quorum: Option<usize>,
    every: Duration,
) -> Result<Option<chainlog::server::witnessing::WitnessSchedule>, CliError> {
    use chainlog::witness::client::WitnessEndpoint;
    if witnesses.is_empty() {
        return Ok(None);
    }
    let witnesses = witnesses
        .iter()
        .map(|w| WitnessEndpoint::parse(w).map_err(|e| CliError::Usage(format!("--witness: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let quorum = quorum.unwrap_or(witnesses.len());
    if quorum == 0 || quorum > witnesses.len() {
        return Err(CliError::Usage(format!(
            "--witness-quorum {quorum}: between 1 and the {} witnesses given",
            witnesses.len()
        )));
    }
    Ok(Some(chainlog::server::witnessing::WitnessSchedule {
        witnesses,
        quorum,
        every,
    }))
}

/// A timeout: seconds, or a number with ms, s or m; at least 1 ms and at
/// most a day.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a timeout: use seconds, or a number with ms, s or m (300ms, 10s, 2m)"
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        _ => return Err(bad()),
    };
    match millis {
        Some(0) => Err(format!("{text:?}: a timeout must be at least 1ms")),
        Some(ms) if ms <= 86_400_000 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{text:?}: a timeout can be at most a day")),
    }
}

/// `--idempotency-ttl`: a number with s, m, h or d, from 1 s to 30 days.
fn parse_keep(text: &str) -> Result<Duration, String> {
    match crate::archive::parse_every(text)? {
        keep if keep <= Duration::from_secs(30 * 86_400) => Ok(keep),
        _ => Err(format!("{text:?}: keep answers from 1s to 30d")),
    }
}

/// Raises the soft file descriptor limit to the hard one (as Go programs
/// do), so that --max-connections is not capped by a low default `ulimit
/// -n`; on failure the server runs with the limit it has.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let _ = setrlimit(
                Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(maximum),
                    maximum: Some(maximum),
                },
            );
        }
    }
}

/// Runs `chainlog serve` until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs, quiet: bool) -> Result<ExitCode, CliError> {
    let signer = match &args.checkpoint_key {
        Some(path) => Some(crate::keys::load_signer(path)?),
        None => None,
    };
    if args.request_timeout == 0 {
        return Err(CliError::Usage(
            "--request-timeout must be at least 1 second".into(),
        ));
    }
    #[cfg(feature = "s3")]
    let archive = archive_schedule(&args, signer.as_ref())?;
    #[cfg(feature = "s3")]
    let cluster = cluster_config(&args.cluster, signer.as_ref(), &args.checkpoint_origin)?;
    let group = args.group.as_deref().map(group_arg).transpose()?;
    let witness = witness_schedule(&args.witnesses, args.witness_quorum, args.witness_every)?;
    let config = ServerConfig {
        data_dir: args.data.clone(),
        listen: args.listen,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        },
        checkpoint_signer: signer,
        checkpoint_origin: args.checkpoint_origin,
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            request_timeout: Duration::from_secs(args.request_timeout),
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections as usize,
            max_body_bytes_in_flight: args.max_body_bytes_in_flight,
            audit: AuditPolicy {
                window: args.audit_window,
                refusals_per_address: args.refusals_per_address,
                refusals_per_log: args.refusals_per_log,
                refusals_total: args.refusals_total,
                security_events_per_key: args.security_events_per_key,
                reads_per_key: args.reads_per_key,
                server_log_readers: args.server_log_readers,
            },
            max_concurrent_exports: args.max_exports as usize,
            max_exports_per_workspace: args.max_exports_per_workspace as usize,
            max_concurrent_verifies: args.max_verifies as usize,
            max_verifies_per_workspace: args.max_verifies_per_workspace as usize,
            max_queued_verifies_per_workspace: args.max_queued_verifies_per_workspace as usize,
            max_concurrent_queries: args.max_queries as usize,
            max_queries_per_workspace: args.max_queries_per_workspace as usize,
            max_queued_queries_per_workspace: args.max_queued_queries_per_workspace as usize,
            idempotency_ttl: args.idempotency_ttl,
            idempotency_keys: args.idempotency_keys as usize,
            ..Limits::default()
        },
        admin_keys: match args.admin_keys {
            AdminKeysArg::Any => AdminKeys::Any,
            AdminKeysArg::LocalOnly => AdminKeys::LocalOnly,
        },
        group,
        allow_other_owner: args.allow_other_owner,
        metrics_listen: args.metrics_listen,
        #[cfg(feature = "s3")]
        archive,
        witness,
        #[cfg(feature = "s3")]
        cluster,
    };
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chainlog-serve")
        .build()
        .map_err(|e| CliError::io("starting the server's runtime", e))?;
    let result = runtime.block_on(async move {
        let server = Server::bind(config)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let scheme = if server.is_tls() { "https" } else { "http" };
        // On stderr, before the first line of stdout: whoever reads the port
        // from that line finds this one written already.
        if let Some(addr) = server.metrics_addr() {
            eprintln!("chainlog serve: metrics at http://{addr}/metrics");
        }
        // The first line is for scripts and tests: they read the port from it.
        outln!("listening on {scheme}://{}", server.local_addr())?;
        if !quiet {
            outln!(
                "data in {}; dashboard at {scheme}://{}/; stop with Ctrl-C or SIGTERM",
                args.data.display(),
                server.local_addr()
            )?;
        }
        let _ = std::io::stdout().flush();
        server
            .run(shutdown_signal())
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        if !quiet {
            outln!("stopped: requests in flight finished, logs synced and closed")?;
        }
        Ok(ExitCode::SUCCESS)
    });
    // The logs are closed by now; a verification or export still running on
    // a blocking thread only reads, so do not wait long for it.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}
