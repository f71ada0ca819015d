//! `chainlog serve`: the HTTP API and the dashboard (see `chainlog::server`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Longest a request may take until its answer starts, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    request_timeout: u64,
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
}

/// The archive schedule the arguments ask for, if any. Archived checkpoints
/// are signed with the server's checkpoint key, when it has one.
#[cfg(feature = "s3")]
fn archive_schedule(
    args: &ServeArgs,
    signer: Option<&chainlog::hash::checkpoint::NoteSigner>,
) -> Result<Option<chainlog::server::archiving::ArchiveSchedule>, CliError> {
    use chainlog::archive::{ArchiveOptions, ArchiveTarget, ObjectLock};
    let Some(url) = &args.archive_to else {
        return Ok(None);
    };
    let target = ArchiveTarget::parse(url)
        .map_err(|e| CliError::Usage(e.to_string()))?
        .with_endpoint(args.archive_endpoint.clone())
        .with_region(args.archive_region.clone());
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
    }))
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
            ..Limits::default()
        },
        #[cfg(feature = "s3")]
        archive,
    };
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
