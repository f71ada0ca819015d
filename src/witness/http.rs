//! The witness's HTTP service (C2SP `tlog-witness`): `POST /add-checkpoint`
//! and `GET /<sha256(origin) hex>/checkpoint`, HTTP/1.1 through axum.
//!
//! `add-checkpoint` runs on a blocking thread: it checks signatures and
//! the proof and fsyncs the state before it answers.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::witness::protocol::{MAX_REQUEST_BYTES, SIZE_CONTENT_TYPE};
use crate::witness::service::{AddError, Witness};

/// The witness's routes.
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/{hash}/checkpoint", get(latest))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(witness)
}

/// Serves the witness on `listener` until `shutdown` completes.
pub async fn serve(
    witness: Arc<Witness>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(witness))
        .with_graceful_shutdown(shutdown)
        .await
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: Bytes) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs().max(1));
    let answer = tokio::task::spawn_blocking(move || witness.add_checkpoint(&body, now)).await;
    match answer {
        Ok(Ok(lines)) => text(StatusCode::OK, lines),
        Ok(Err(AddError::Conflict { known, .. })) => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
            format!("{known}\n"),
        )
            .into_response(),
        Ok(Err(e)) => {
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                eprintln!("chainlog witness: {e}");
                return text(status, "the witness could not store its state\n".into());
            }
            text(status, format!("{e}\n"))
        }
        Err(e) => {
            eprintln!("chainlog witness: add-checkpoint failed: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into())
        }
    }
}

async fn latest(State(witness): State<Arc<Witness>>, Path(hash): Path<String>) -> Response {
    match witness.latest(&hash) {
        Some(note) => text(StatusCode::OK, note),
        None => text(
            StatusCode::NOT_FOUND,
            "no checkpoint cosigned for that log\n".into(),
        ),
    }
}
