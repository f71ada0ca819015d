//! `chainlog delivery add|list|remove|status`: a workspace's SIEM
//! destinations (see `chainlog::server::deliveries`), in
//! `DIR/deliveries/<workspace>.json`. The file is changed under its lock,
//! as the API changes it; a running `chainlog serve` reads it again within
//! a second and starts, restarts or stops the destinations to match.
//! Changes made here are not recorded in the workspace's log (the server
//! may hold it); those made through the API are (`delivery.configured`,
//! `delivery.removed`).

use std::path::PathBuf;
use std::process::ExitCode;

use chainlog::server::deliveries::config::{self, Destination, Kind};
use chainlog::server::deliveries::render::Format;
use chainlog::server::deliveries::{lag, position, status_json, DeliveryError, Status};
use chainlog::Timestamp;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use crate::apikey::DataArg;
use crate::error::CliError;

/// `chainlog delivery`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum DeliveryCommand {
    /// Add a destination. A webhook's secret is generated when not given
    /// and printed once, alone on the last line.
    Add(Box<AddArgs>),
    /// List the workspace's destinations (never their secrets or tokens).
    List(ShowArgs),
    /// Remove a destination and its position.
    Remove {
        #[command(flatten)]
        at: WorkspaceArgs,
        /// The destination.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
    /// Each destination's stored position, failures and lag (records
    /// behind the log's end, seconds since the oldest undelivered record
    /// was received), as the server last stored them.
    Status(ShowArgs),
}

/// `--data DIR --workspace W`.
#[derive(Debug, Args)]
pub struct WorkspaceArgs {
    #[command(flatten)]
    data: DataArg,
    /// The workspace.
    #[arg(long, value_name = "NAME")]
    workspace: String,
}

/// `--data DIR --workspace W [--json]`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    at: WorkspaceArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A destination's kind, as named on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// HTTPS POST of a JSON batch, HMAC-SHA256 signed.
    Webhook,
    /// Splunk HTTP Event Collector.
    SplunkHec,
    /// Syslog over TLS (RFC 5424/5425).
    Syslog,
}

/// A format, as named on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// The row of `GET …/events`, with the workspace.
    Json,
    /// OCSF 1.x.
    Ocsf,
    /// CEF (syslog only).
    Cef,
}

/// `chainlog delivery add`'s arguments.
#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    at: WorkspaceArgs,
    /// The destination's name (1-63 of a-z, 0-9, '_', '-').
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Where the records go.
    #[arg(long, value_enum)]
    kind: KindArg,
    /// How each record is written.
    #[arg(long, value_enum, default_value = "json")]
    format: FormatArg,
    /// The webhook's URL, or the HEC's base URL (https; http to loopback only).
    #[arg(long)]
    url: Option<String>,
    /// The webhook's HMAC secret (default: 32 random bytes, printed once).
    #[arg(long, env = "CHAINLOG_DELIVERY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The HEC token.
    #[arg(long, env = "CHAINLOG_DELIVERY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The HEC index.
    #[arg(long)]
    index: Option<String>,
    /// The HEC `host` field (default: this machine's name).
    #[arg(long)]
    hec_host: Option<String>,
    /// Syslog: `host:port` of the TLS listener.
    #[arg(long)]
    address: Option<String>,
    /// A PEM file of the CA(s) to verify the receiver with, in place of the
    /// system's roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A filter of `GET …/events` as NAME=VALUE (`event=auth.*`,
    /// `outcome=failure`, `actor=…`, `node=…`); repeatable.
    #[arg(long = "filter", value_name = "NAME=VALUE")]
    filters: Vec<String>,
    /// Events per request (1-1000, default 100).
    #[arg(long)]
    batch_events: Option<u32>,
    /// The first seq to deliver (default 0: the whole log).
    #[arg(long)]
    start_seq: Option<u64>,
}

fn delivery_error(e: DeliveryError) -> CliError {
    CliError::Usage(e.to_string())
}

/// Percent-encodes a filter's name or value for the query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn add(args: AddArgs, quiet: bool) -> Result<ExitCode, CliError> {
    let dir = args.at.data.checked()?.to_path_buf();
    let workspace = args.at.workspace.clone();
    let mut filters = Vec::new();
    for f in &args.filters {
        let (name, value) = f
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--filter {f:?}: expected NAME=VALUE")))?;
        filters.push(format!("{}={}", encode(name), encode(value)));
    }
    let kind = match args.kind {
        KindArg::Webhook => Kind::Webhook,
        KindArg::SplunkHec => Kind::SplunkHec,
        KindArg::Syslog => Kind::Syslog,
    };
    let generated = match (kind, &args.secret) {
        (Kind::Webhook, None) => Some(config::new_secret().map_err(delivery_error)?),
        _ => None,
    };
    let destination = Destination {
        name: args.name.clone(),
        id: config::new_id(),
        kind,
        format: match args.format {
            FormatArg::Json => Format::Json,
            FormatArg::Ocsf => Format::Ocsf,
            FormatArg::Cef => Format::Cef,
        },
        filters: filters.join("&"),
        url: args.url,
        secret: args.secret.or(generated.clone()),
        token: args.token,
        index: args.index,
        host: args.hec_host,
        address: args.address,
        ca_file: args.ca_file,
        batch_events: args.batch_events,
        start_seq: args.start_seq,
    };
    destination.validate().map_err(delivery_error)?;
    config::change(&dir, &workspace, |list| {
        if list.iter().any(|d| d.name == destination.name) {
            return Err(DeliveryError::Exists(destination.name.clone()));
        }
        // A position left by an earlier destination of this name belongs
        // to another id and is ignored.
        list.push(destination.clone());
        Ok(())
    })
    .map_err(delivery_error)?;
    if !quiet {
        outln!(
            "added {} destination {} to workspace {} (a running server starts it within a second)",
            kind.as_str(),
            args.name,
            workspace
        )?;
    }
    if let Some(secret) = generated {
        if !quiet {
            outln!("the webhook secret is shown only now; the receiver checks each request's signature with it:")?;
        }
        outln!("{secret}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Each destination with its stored position and lag.
fn statuses(dir: &std::path::Path, workspace: &str) -> Result<Vec<Value>, CliError> {
    let list = config::load(dir, workspace).map_err(delivery_error)?;
    let log_dir = dir.join("workspaces").join(workspace);
    let log = crate::read::open_read_only(&log_dir).ok();
    let end = log.as_ref().map(|log| log.state().next_seq);
    let now = Timestamp::now();
    let mut out = Vec::new();
    for d in &list {
        let stored = position::load(dir, workspace, &d.name).map_err(delivery_error)?;
        let status = stored.filter(|p| p.id == d.id).map(|p| Status {
            next_seq: p.next_seq,
            delivered: p.delivered,
            consecutive_failures: p.consecutive_failures,
            failing: p.failing_event_seq.is_some(),
            failing_since: p.failing_since,
            last_error: p.last_error,
            oldest_pending: log
                .as_ref()
                .and_then(|log| log.iter_from(p.next_seq).next())
                .and_then(|r| r.ok())
                .and_then(|r| r.received_at),
            ..Status::default()
        });
        let lag = status.as_ref().zip(end).map(|(s, end)| lag(s, end, now));
        let mut shown = status_json(d, status.as_ref(), lag.as_ref());
        // What the CLI reads is the stored position, not a live task.
        if let Some(s) = shown.get_mut("status").and_then(Value::as_object_mut) {
            s.remove("running");
            s.remove("stopped");
        }
        out.push(shown);
    }
    Ok(out)
}

/// `chainlog delivery …`.
pub fn run(command: DeliveryCommand, quiet: bool) -> Result<ExitCode, CliError> {
    match command {
        DeliveryCommand::Add(args) => add(*args, quiet),
        DeliveryCommand::List(ShowArgs {
            at: WorkspaceArgs { data, workspace },
            json,
        }) => {
            let list = config::load(data.checked()?, &workspace).map_err(delivery_error)?;
            if json {
                let shown: Vec<Value> = list.iter().map(Destination::redacted).collect();
                outln!("{}", Value::Array(shown))?;
            } else {
                for d in &list {
                    outln!(
                        "{}\t{}\t{}\t{}\t{}",
                        d.name,
                        d.kind.as_str(),
                        d.format.as_str(),
                        d.url.as_deref().or(d.address.as_deref()).unwrap_or("-"),
                        if d.filters.is_empty() {
                            "all events"
                        } else {
                            &d.filters
                        }
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeliveryCommand::Remove {
            at: WorkspaceArgs { data, workspace },
            name,
        } => {
            let dir = data.checked()?;
            config::change(dir, &workspace, |list| {
                let i = list
                    .iter()
                    .position(|d| d.name == name)
                    .ok_or_else(|| DeliveryError::NotFound(name.clone()))?;
                list.remove(i);
                Ok(())
            })
            .map_err(delivery_error)?;
            position::remove(dir, &workspace, &name).map_err(delivery_error)?;
            if !quiet {
                outln!("removed destination {name} of workspace {workspace}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DeliveryCommand::Status(ShowArgs {
            at: WorkspaceArgs { data, workspace },
            json,
        }) => {
            let shown = statuses(data.checked()?, &workspace)?;
            if json {
                outln!("{}", Value::Array(shown))?;
                return Ok(ExitCode::SUCCESS);
            }
            for d in &shown {
                let s = &d["status"];
                outln!(
                    "{}\t{}\tnext_seq {}\tdelivered {}\tbehind {} records, {:.1} s\t{}",
                    d["name"].as_str().unwrap_or_default(),
                    d["kind"].as_str().unwrap_or_default(),
                    s["next_seq"].as_u64().map_or("-".into(), |n| n.to_string()),
                    s["delivered"].as_u64().unwrap_or(0),
                    s["records_behind"]
                        .as_u64()
                        .map_or("?".into(), |n| n.to_string()),
                    s["seconds_behind"].as_f64().unwrap_or(0.0),
                    if s["failing"].as_bool() == Some(true) {
                        format!(
                            "FAILING since {}: {}",
                            s["failing_since"].as_str().unwrap_or("?"),
                            s["last_error"].as_str().unwrap_or("?")
                        )
                    } else {
                        "ok".into()
                    }
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
