//! The cluster's figures for docs/PERFORMANCE.md ("Cluster"), measured on
//! loopback with `chainlog serve --bucket` processes over Ceph's radosgw
//! (one memstore OSD, support/ceph.rs), at the server's default lease TTL
//! (10 s), flush interval (250 ms) and ack timeout (10 s):
//!
//! - replicated appends from 64 clients against one node (batched POSTs):
//!   events/s and the acknowledgement's p50/p99, against twice the flush
//!   interval;
//! - failover: from the holder's SIGKILL to the first 201 on the new holder;
//! - read-replica lag: a 201 on the writer until `GET …/events/{seq}` on a
//!   `serve --read-only` node finds the record;
//! - requests to the bucket (counted by the proxy between the nodes and
//!   radosgw) at 1,000 events/s and idle, and their monthly cost on S3's
//!   list prices.
//!
//! Not a test that can fail on a figure (these machines drift); run it with
//!
//! ```text
//! cargo test --release --test cluster_figures -- --ignored --nocapture
//! ```
#![cfg(all(feature = "s3", feature = "server"))]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[path = "support/cluster.rs"]
mod cluster;
use cluster::{ceph, s3, tools};

use ceph::CephServer;
use cluster::{
    event_json, get_json, post_events, quantile, Cluster, ClusterOptions, Load, LoadSpec,
};

/// S3's list prices (us-east-1, standard), dollars per 1,000 requests.
const PUT_PER_1000: f64 = 0.005;
const GET_PER_1000: f64 = 0.0004;
const SECONDS_PER_MONTH: f64 = 30.0 * 24.0 * 3600.0;

fn defaults() -> ClusterOptions {
    ClusterOptions {
        lease_ttl: Duration::from_secs(10),
        flush_interval: Duration::from_millis(250),
        ack_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        // The server's default.
        segment_bytes: 64 << 20,
    }
}

fn spec(c: &Cluster, w: &str, clients: usize, batch: usize, interval: Duration) -> LoadSpec {
    LoadSpec {
        targets: vec![c.nodes[0].addr],
        workspace: w.into(),
        key: c.key(w).into(),
        clients,
        batch,
        tag: "fig".into(),
        interval,
        timeout: Duration::from_secs(60),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Requests forwarded by the proxy between `before` and `after`, by kind.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// PUT-priced (PUT, POST, LIST) and GET-priced (GET, HEAD) requests per
/// second over `seconds`, and the monthly cost line.
fn cost(label: &str, requests: &BTreeMap<String, u64>, seconds: f64) -> String {
    let count = |kinds: &[&str]| -> f64 {
        kinds
            .iter()
            .map(|k| requests.get(*k).copied().unwrap_or(0))
            .sum::<u64>() as f64
    };
    // S3 prices LIST as a PUT, and DELETE not at all.
    let puts = count(&["PUT", "POST", "LIST"]) / seconds;
    let gets = count(&["GET", "HEAD"]) / seconds;
    let put_month = puts * SECONDS_PER_MONTH / 1000.0 * PUT_PER_1000;
    let get_month = gets * SECONDS_PER_MONTH / 1000.0 * GET_PER_1000;
    format!(
        "{label}: {requests:?} in {seconds:.1} s = {puts:.2} PUT+LIST/s and {gets:.2} GET+HEAD/s; a month \
         (2,592,000 s): {puts:.2} × 2,592,000 / 1,000 × $0.005 = ${put_month:.2} of PUTs, \
         {gets:.2} × 2,592,000 / 1,000 × $0.0004 = ${get_month:.2} of GETs, ${:.2} in all",
        put_month + get_month
    )
}

#[test]
#[ignore = "figures for docs/PERFORMANCE.md: run with --release --ignored --nocapture"]
fn cluster_figures() {
    let Some(ceph) = CephServer::shared() else {
        return;
    };
    let w = "bench".to_string();
    let mut report = Vec::new();

    // 1. Throughput and acknowledgement latency: 64 clients, one node.
    {
        let c = Cluster::start(
            ceph,
            "cluster_figures/throughput",
            1,
            std::slice::from_ref(&w),
            defaults(),
        );
        for batch in [100, 500] {
            let before = c.proxy.counts();
            let load = Load::start(spec(&c, &w, 64, batch, Duration::ZERO));
            load.expect_more(1, Duration::from_secs(60), "the load", &c);
            let start = Instant::now();
            let at_start = load.acknowledged();
            std::thread::sleep(Duration::from_secs(10)); // the measured window
            let events = load.acknowledged() - at_start;
            let elapsed = start.elapsed();
            let outcomes = load.finish();
            let after = c.proxy.counts();
            let failed = outcomes.iter().filter(|o| o.status != Some(201)).count();
            let waits: Vec<_> = outcomes
                .iter()
                .filter(|o| o.status == Some(201))
                .map(cluster::Outcome::latency)
                .collect();
            report.push(format!(
                "64 clients, {batch} events per POST: {:.0} events/s acknowledged ({events} in \
                 {elapsed:.1?}); acknowledgement p50 {:.0} ms, p99 {:.0} ms (twice the flush \
                 interval: 500 ms); {failed} answers other than 201",
                events as f64 / elapsed.as_secs_f64(),
                ms(quantile(&waits, 0.5)),
                ms(quantile(&waits, 0.99)),
            ));
            report.push(cost(
                &format!("  bucket requests at that rate ({batch} per POST)"),
                &delta(&before, &after),
                elapsed.as_secs_f64(),
            ));
        }
    }

    // 2. Requests to the bucket at 1,000 events/s (40 clients, 10 events
    // every 400 ms each) and idle.
    {
        let c = Cluster::start(
            ceph,
            "cluster_figures/cost",
            1,
            std::slice::from_ref(&w),
            defaults(),
        );
        let load = Load::start(spec(&c, &w, 40, 10, Duration::from_millis(400)));
        load.expect_more(1000, Duration::from_secs(60), "the load", &c);
        let (before, at_start, start) = (c.proxy.counts(), load.acknowledged(), Instant::now());
        std::thread::sleep(Duration::from_secs(20));
        let (after, events, elapsed) = (
            c.proxy.counts(),
            load.acknowledged() - at_start,
            start.elapsed(),
        );
        load.finish();
        report.push(cost(
            &format!(
                "at {:.0} events/s (one workspace, one node)",
                events as f64 / elapsed.as_secs_f64()
            ),
            &delta(&before, &after),
            elapsed.as_secs_f64(),
        ));
        let before = c.proxy.counts();
        std::thread::sleep(Duration::from_secs(20));
        report.push(cost(
            "idle (one workspace, one node)",
            &delta(&before, &c.proxy.counts()),
            20.0,
        ));
    }

    // 3. Read-replica lag.
    {
        let mut c = Cluster::start(
            ceph,
            "cluster_figures/replica",
            1,
            std::slice::from_ref(&w),
            defaults(),
        );
        let poll = Duration::from_millis(500);
        c.add_read_only("replica", poll);
        let (writer, replica) = (c.nodes[0].addr, c.nodes[1].addr);
        let mut lags = Vec::new();
        for i in 0..20 {
            let (status, body) = post_events(
                writer,
                &w,
                c.key(&w),
                &event_json(&format!("lag-{i}")),
                &[],
                Duration::from_secs(60),
            )
            .unwrap();
            assert_eq!(status, 201, "{body}");
            let acked = Instant::now();
            let seq = cluster::receipts(&body)[0].0;
            let path = format!("/v1/workspaces/{w}/events/{seq}");
            c.wait_for(
                Duration::from_secs(30),
                "the replica to see the record",
                || (get_json(replica, &path, c.key(&w)).0 == 200).then_some(()),
            );
            lags.push(acked.elapsed());
        }
        report.push(format!(
            "read-replica lag (poll interval {poll:?}, flush interval 250 ms; 20 appends, from \
             the writer's 201 to the record on the replica): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            ms(quantile(&lags, 0.5)),
            ms(quantile(&lags, 0.99)),
            ms(quantile(&lags, 1.0)),
        ));
    }

    // 4. Failover at the default lease TTL: SIGKILL the holder under load.
    {
        let mut c = Cluster::start(
            ceph,
            "cluster_figures/failover",
            2,
            std::slice::from_ref(&w),
            defaults(),
        );
        let load = Load::start(LoadSpec {
            targets: c.nodes.iter().map(|n| n.addr).collect(),
            ..spec(&c, &w, 4, 10, Duration::ZERO)
        });
        load.expect_more(200, Duration::from_secs(60), "the load", &c);
        let holder = c.lease(&w).unwrap().holder;
        let killed_at = Instant::now();
        c.node_mut(&holder).kill();
        let after = c.wait_for(Duration::from_secs(90), "a 201 after the kill", || {
            load.outcomes()
                .iter()
                .filter(|o| o.status == Some(201) && o.sent_at >= killed_at)
                .map(|o| o.done_at)
                .min()
        });
        load.finish();
        report.push(format!(
            "failover (lease TTL 10 s): {:.1} s from the holder's SIGKILL to the first 201 on the new holder",
            (after - killed_at).as_secs_f64()
        ));
    }

    eprintln!("\n=== cluster figures ===");
    for line in &report {
        eprintln!("{line}");
    }
}
