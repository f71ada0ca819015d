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
