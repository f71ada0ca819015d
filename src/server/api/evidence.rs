//! `GET /v1/workspaces/{w}/evidence`: an evidence pack of a period, streamed
//! as it is written (see [`crate::evidence`]). Admin scope; it signs with the
//! server's checkpoint key and takes a verification slot, as signing a
//! checkpoint does; it is recorded as an `access.evidence` read.

use std::io;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};

use crate::event::Timestamp;
use crate::evidence::{self, EvidenceError, EvidenceOptions};
use crate::query::parse_time;
use crate::server::error::ApiError;
use crate::server::keys::Scope;
use crate::server::reads::{record_read_blocking, ReadKind};

use super::read::{attachment, body_channel};
use super::*;

/// The period and sample a request asks for.
fn options(uri: &Uri, generated_by: String) -> Result<EvidenceOptions, ApiError> {
    let now = Timestamp::now();
    let bad = |detail: String| ApiError::bad_request("invalid_parameter", detail);
    let (mut since, mut until, mut sample, mut seed) = (None, None, None, None);
    for (name, value) in query_pairs(uri)? {
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| bad(format!("{name} must be a whole number, not {value:?}")))
        };
        match name.as_str() {
            "since" | "until" => {
                let t = parse_time(&value, now).map_err(|e| bad(format!("{name}: {e}")))?;
                if name == "since" {
                    since = Some(t)
                } else {
                    until = Some(t)
                }
            }
            "sample" => sample = Some(number()?),
            "seed" => seed = Some(number()?),
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?} (expected since, until, sample, seed)"
                )))
            }
        }
    }
    let since = since.ok_or_else(|| bad("since is required: the start of the period".into()))?;
    let mut options = EvidenceOptions::new(since, until.unwrap_or(now));
    if let Some(n) = sample {
        options.sample = n;
    }
    if let Some(s) = seed {
        options.seed = s;
    }
    if options.since >= options.until {
        return Err(bad(format!(
            "since {} is not before until {}",
            options.since, options.until
        )));
    }
    if options.sample > evidence::MAX_SAMPLE {
        return Err(bad(format!("sample is at most {}", evidence::MAX_SAMPLE)));
    }
    options.generated_by = generated_by;
    Ok(options)
}

pub(super) async fn evidence_pack(
    State(state): State<Shared>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Admin).await?;
    if state.signer.is_none() {
        return Err(ApiError::not_found(
            "checkpoints_not_configured",
            "this server signs no checkpoints, and a pack's checkpoints are signed: start it with --checkpoint-key FILE",
        ));
    }
    let mut options = options(&uri, format!("apikey:{}", key.id))?;
    options.origin_prefix = state.checkpoint_origin.clone();
    let permit = match state.verify_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let log = workspace_log(&state, &w, &key).await?;
    // The newest witnessed checkpoint goes in the pack when there is one.
    let (data_dir, workspace) = (state.data_dir.clone(), w.clone());
    options.witnessed_checkpoint = blocking(move || {
        crate::server::witnessing::witnessed_checkpoint(&data_dir, &workspace)
            .map_err(|e| ApiError::internal("reading the witnessed checkpoint", &e))
    })
    .await??;
    #[cfg(feature = "s3")]
    if let Some(target) = &state.archive_target {
        let target = crate::server::archiving::workspace_archive(target, &w);
        let log_id = log.log_id().to_string();
        options.archive = Some(evidence::ArchiveState(std::sync::Arc::new(
            move |first, end| crate::archive::period_archive_json(&target, &log_id, first, end),
        )));
    }
    let (mut writer, body) = body_channel();
    let (st, workspace) = (state.clone(), w.clone());
    let mut read = caller.read(&key, ReadKind::Evidence, 0, 0);
    read.filters = uri.query().map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let Some(signer) = st.signer.as_ref() else {
            return;
        };
        let result = evidence::build(
            &log,
            signer,
            &options,
            &mut writer,
            &|_| None,
            &mut |_, _| {},
        );
        let ended = match &result {
            Ok(_) => "complete",
            Err(EvidenceError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => "client_gone",
            Err(EvidenceError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => "client_stalled",
            Err(_) => "failed",
        };
        if let Ok(summary) = &result {
            read.rows = summary.end_seq - summary.first_seq;
        }
        if let Err(e) = &result {
            if ended == "failed" {
                eprintln!("chainlog serve: evidence pack cut short: {e}");
                // An error item ends the body early: the client sees an
                // incomplete transfer, never a short pack.
                let _ = writer.send(Err(io::Error::other("evidence pack failed")));
            }
        }
        let _ = writer.send_buffered();
        read.bytes = writer.sent;
        read.extra.insert("ended".into(), ended.into());
        // Recorded, and the slot free, before the client sees the end.
        record_read_blocking(&st, Some(&workspace), &read);
        drop(permit);
        drop(writer);
    });
    Ok(attachment(
        body,
        "application/zip",
        &format!("{w}-evidence.zip"),
    ))
}
