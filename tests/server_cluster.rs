//! `chainlog serve --bucket` as one process or two (issue 16; T's
//! tests/cluster_failover.rs has the multi-process failover scenarios):
//! an append answered only once it is in the bucket, a request to the node
//! that does not hold the workspace forwarded with its API key, a read-only
//! replica serving what a writer appended and refusing appends, a bucket
//! that ignores conditional writes refused at start-up, and `export --from`
//! reading records that are in pieces but not archived yet.
//!
//! On Ceph's radosgw (support/ceph.rs, through support/cluster.rs's harness),
//! bucket `audit` (no Object Lock), each test under its own prefix
//! `server_cluster/NAME-…`. Without Ceph the tests are skipped with a note,
//! unless `CHAINLOG_REQUIRE_CEPH` is set (as `scripts/test.sh` does).
#![cfg(all(feature = "s3", feature = "server"))]

use std::time::Duration;

use serde_json::Value;

#[path = "support/cluster.rs"]
mod cluster;
use cluster::{ceph, proxy, s3, server, tools};

use ceph::CephServer;
use cluster::{
    event_json, get_json, post_events, receipts, Cluster, ClusterOptions, FORWARDED_HEADER,
};
use s3::TestS3;

const WAIT: Duration = Duration::from_secs(60);

fn batch(tags: &[String]) -> String {
    let events: Vec<String> = tags.iter().map(|t| event_json(t)).collect();
    format!("[{}]", events.join(","))
}

fn tags(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn one_workspace(ceph: &'static CephServer, test: &str, nodes: usize) -> Cluster {
    Cluster::start(
        ceph,
        &format!("server_cluster/{test}"),
        nodes,
        &["acme".to_string()],
        ClusterOptions::default(),
    )
}

/// POSTs `tags` as events to `acme` at node `i` and expects 201; the receipts.
fn append(cluster: &Cluster, i: usize, tags: &[String]) -> Vec<(u64, String)> {
    let (status, body) = post_events(
        cluster.nodes[i].addr,
        "acme",
        cluster.key("acme"),
        &batch(tags),
        &[],
        WAIT,
    )
    .unwrap();
    assert_eq!(status, 201, "{body}\n{}", cluster.stderrs());
    receipts(&body)
}

/// The `context.tag` of each event a `GET …/events` page holds.
fn event_tags(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["context"]["tag"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_append_is_answered_201_only_once_its_records_are_in_the_bucket() {
    let Some(ceph) = CephServer::shared() else {
        return;
    };
    let cluster = one_workspace(ceph, "ack", 1);
    for round in 0..5 {
        let receipts = append(&cluster, 0, &tags(&format!("r{round}"), 3));
        let last = receipts.last().unwrap().0;
        // Read straight from radosgw after the answer: the head covers it.
        let head = cluster.head("acme").expect("a published head after a 201");
        assert!(
            head.size > last,
            "answered 201 for seq {last}, but the bucket's head is at size {}",
            head.size
        );
    }
    let lease = cluster.lease("acme").expect("the workspace's lease");
    assert_eq!(lease.holder, "node-0");
}

#[test]
fn a_request_to_the_node_that_does_not_hold_the_workspace_is_forwarded_with_its_key() {
    let Some(ceph) = CephServer::shared() else {
        return;
    };
    let cluster = one_workspace(ceph, "forward", 2);
    // Created through node-0, which forwards it to the preferred node when
    // that is node-1.
    let first = append(&cluster, 0, &tags("first", 2));
    assert_eq!(first.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1]);
    let holder = cluster.lease("acme").expect("a lease").holder;
    let other = cluster.nodes.iter().position(|n| n.id != holder).unwrap();
    // The same admin key, sent to the other node: forwarded to the holder,
    // and the chain goes on there.
    let second = append(&cluster, other, &tags("second", 2));
    assert_eq!(second.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3]);
    let (status, page) = get_json(
        cluster.nodes[other].addr,
        "/v1/workspaces/acme/events?limit=10",
        cluster.key("acme"),
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        event_tags(&page),
        ["first-0", "first-1", "second-0", "second-1"]
    );
    // A streamed answer (an export, chunked) comes back through the forward.
    let (status, body) = server::raw_get(
        cluster.nodes[other].addr,
        "/v1/workspaces/acme/export?format=jsonl",
        Some(cluster.key("acme")),
    );
    assert_eq!(status, 200, "{body}");
    for tag in ["first-0", "first-1", "second-0", "second-1"] {
        assert!(
            body.contains(&format!("\"tag\":\"{tag}\"")),
            "{tag}: {body}"
        );
    }
    // A wrong key is refused by the holder, through the forward.
    let (status, _) = post_events(
        cluster.nodes[other].addr,
        "acme",
        "clk_nosuchkey_000000000000000000000000",
        &batch(&tags("bad", 1)),
        &[],
        WAIT,
    )
    .unwrap();
    assert_eq!(status, 401);
    // One hop at most: a forwarded request reaching the non-holder is not
    // forwarded again.
    let (status, body) = post_events(
        cluster.nodes[other].addr,
        "acme",
        cluster.key("acme"),
        &batch(&tags("twice", 1)),
        &[(FORWARDED_HEADER, "test")],
        WAIT,
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not_holder"), "{body}");
    assert_eq!(cluster.lease("acme").unwrap().holder, holder);
}

#[test]
fn a_read_only_replica_serves_what_the_writer_appended_and_refuses_appends() {
    let Some(ceph) = CephServer::shared() else {
        return;
    };
    let mut cluster = one_workspace(ceph, "replica", 1);
    append(&cluster, 0, &tags("w", 3));
    let replica = cluster.add_read_only("replica", Duration::from_millis(200));
    let addr = cluster.nodes[replica].addr;
    let key = cluster.key("acme").to_string();
    cluster.wait_for(WAIT, "the replica to serve the writer's events", || {
        let (status, page) = get_json(addr, "/v1/workspaces/acme/events?limit=10", &key);
        (status == 200 && event_tags(&page) == ["w-0", "w-1", "w-2"]).then_some(())
    });
    // Appended later on the writer: followed.
    append(&cluster, 0, &tags("later", 1));
    cluster.wait_for(WAIT, "the replica to follow the head", || {
        let (_, page) = get_json(addr, "/v1/workspaces/acme/events?limit=10", &key);
        (event_tags(&page).len() == 4).then_some(())
    });
    let (status, body) =
        post_events(addr, "acme", &key, &batch(&tags("refused", 1)), &[], WAIT).unwrap();
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("read-only replica"), "{body}");
    assert_eq!(cluster.head("acme").unwrap().size, 4);
    assert!(cluster.lease("acme").is_some_and(|l| l.holder == "node-0"));
}

#[test]
fn serve_bucket_refuses_to_start_where_conditional_writes_are_not_enforced() {
    let Some(ceph) = CephServer::shared() else {
        return;
    };
    s3::library_credentials();
    let proxy = proxy::Proxy::stripping(ceph.port);
    let dir = tempfile::tempdir().unwrap();
    let key = server::checkpoint_key(dir.path());
    let prefix = format!(
        "s3://{}/server_cluster/probe-{}",
        ceph::OPEN_BUCKET,
        std::process::id()
    );
    let out = server::chainlog()
        .args([
            "serve",
            "--bucket",
            &prefix,
            "--endpoint",
            &proxy.endpoint(),
        ])
        .args(["--node-id", "node-0", "--advertise", "http://127.0.0.1:1"])
        .arg("--checkpoint-key")
        .arg(&key)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .envs(ceph.env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("does not enforce conditional writes"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "it listened: {:?}", out.stdout);
}

#[test]
fn export_from_reads_the_records_in_pieces_that_are_not_archived_yet() {
    let Some(ceph) = CephServer::shared() else {
        return;
    };
    let cluster = one_workspace(ceph, "from", 1);
    let written = append(&cluster, 0, &tags("p", 5));
    let url = cluster.workspace_url("acme");
    // Nothing is sealed, so nothing is archived: the records are in pieces.
    let objects = ceph.objects(&format!("{}/ws/acme", cluster.prefix));
    let archived: Vec<&String> = objects.iter().filter(|k| k.ends_with(".seg")).collect();
    assert!(archived.is_empty(), "{archived:?}");
    let rows: Vec<(u64, String)> = cluster
        .export("acme")
        .into_iter()
        .map(|row| (row.seq, row.hash))
        .collect();
    assert_eq!(rows, written);
    // query --from reads them too, and verify --from checks the whole log
    // against the published head.
    let public = cluster.checkpoint_pub.to_str().unwrap();
    let out = cluster.cli(&[
        "query",
        "--format",
        "jsonl",
        "--from",
        &url,
        "--checkpoint-public-key",
        public,
        "--actor",
        "load@acme.io",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 5);
    let text = cluster.verify("acme");
    assert!(text.contains("matches"), "{text}");
    // A replicated workspace is not read without the key that checks its head.
    let out = cluster.cli(&["export", "--format", "jsonl", "--from", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--checkpoint-public-key"));
}
