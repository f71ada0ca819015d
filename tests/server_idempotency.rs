//! `Idempotency-Key` on `POST /v1/workspaces/{w}/events` through real
//! HTTP: a retry gets the first answer and appends nothing, another body
//! under the same key is refused, concurrent retries append once, a
//! refused request frees its key, and `--idempotency-keys` bounds what is
//! kept.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod support;

use std::path::Path;

use chainlog::{Log, Options};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use support::{data_with_admin, TestServer};

/// An answer: status, the `Idempotent-Replayed` header, the body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    replayed: Option<String>,
    body: Value,
}

/// Checks that `a` is a new append (201, not a replayed answer).
fn assert_appended(a: &Answer) {
    assert_eq!(
        (a.status, a.replayed.as_deref()),
        (StatusCode::CREATED, None),
        "{a:?}"
    );
}

async fn post(
    client: &Client,
    url: &str,
    key: &str,
    idempotency: Option<&str>,
    body: &str,
) -> Answer {
    let mut request = client
        .post(url)
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(k) = idempotency {
        request = request.header("Idempotency-Key", k);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        replayed,
        body,
    }
}

fn event(run: &str) -> String {
    format!(r#"{{"event":"retry.test","actor":"client","context":{{"run":"{run}"}}}}"#)
}

/// How many stored events carry `run` in their context, per run.
fn runs(workspace: &Path) -> std::collections::BTreeMap<String, usize> {
    let log = Log::open(workspace, Options::for_reading()).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for record in log.iter_from(0) {
        let record = record.unwrap();
        if record.event.event_type == "retry.test" {
            let run = record.event.context["run"].as_str().unwrap().to_string();
            *counts.entry(run).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_answered_once() {
    let (_tmp, data, key) = data_with_admin("w");
    let server = TestServer::start(&data, &["--idempotency-keys", "3"]);
    let url = format!("{}/v1/workspaces/w/events", server.url);
    let client = Client::new();

    // The first answer, then the same answer again, marked as a replay.
    let first = post(&client, &url, &key, Some("retry-1"), &event("a")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.replayed, None);
    let again = post(&client, &url, &key, Some("retry-1"), &event("a")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    assert_eq!(again.replayed.as_deref(), Some("true"));
    assert_eq!(again.body, first.body);

    // The same key with another body.
    let other = post(&client, &url, &key, Some("retry-1"), &event("b")).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{other:?}");
    assert_eq!(other.body["error"], "idempotency_key_reused");

    // A key that is no key.
    let bad = post(&client, &url, &key, Some("two words"), &event("c")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{bad:?}");
    assert_eq!(bad.body["error"], "invalid_idempotency_key");

    // A refused request appends nothing and frees its key.
    let refused = post(
        &client,
        &url,
        &key,
        Some("retry-2"),
        r#"{"event":"retry.test"}"#,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    let fixed = post(&client, &url, &key, Some("retry-2"), &event("d")).await;
    assert_appended(&fixed);

    // Eight identical requests at once: one append, and every answer is
    // that append's (first or replayed) or 409 while it runs.
    let body = event("e");
    let attempts = (0..8).map(|_| {
        let (client, url, key, body) = (client.clone(), url.clone(), key.clone(), body.clone());
        async move { post(&client, &url, &key, Some("retry-3"), &body).await }
    });
    let answers = join_all(attempts).await;
    let created: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty(), "{answers:?}");
    for a in &answers {
        match a.status {
            StatusCode::CREATED => assert_eq!(a.body, created[0].body, "{answers:?}"),
            StatusCode::CONFLICT => assert_eq!(a.body["error"], "idempotency_key_in_flight"),
            _ => panic!("{answers:?}"),
        }
    }
    assert_eq!(
        created.iter().filter(|a| a.replayed.is_none()).count(),
        1,
        "{answers:?}"
    );

    // Three answers are kept per workspace (--idempotency-keys 3):
    // retry-1 was the oldest, so after one more key it is gone and its
    // request appends again.
    let newest = post(&client, &url, &key, Some("retry-4"), &event("f")).await;
    assert_eq!(newest.status, StatusCode::CREATED, "{newest:?}");
    let forgotten = post(&client, &url, &key, Some("retry-1"), &event("a")).await;
    assert_appended(&forgotten);
    assert_ne!(forgotten.body, first.body);

    // Without the header, every POST appends.
    for _ in 0..2 {
        let plain = post(&client, &url, &key, None, &event("g")).await;
        assert_eq!(plain.status, StatusCode::CREATED, "{plain:?}");
    }

    let (_, _) = server.stop();
    let counts = runs(&data.join("workspaces").join("w"));
    let want: Vec<(&str, usize)> = vec![("a", 2), ("d", 1), ("e", 1), ("f", 1), ("g", 2)];
    let got: Vec<(&str, usize)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(got, want);
}

/// Runs the futures at once, on the test's runtime.
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<Answer>
where
    F: std::future::Future<Output = Answer> + Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut answers = Vec::new();
    for h in handles {
        answers.push(h.await.unwrap());
    }
    answers
}
