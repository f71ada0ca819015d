//! `chainlog serve --witness`: the server submits each workspace's
//! checkpoints to three `chainlog witness serve` processes on loopback.
//!
//! After appends, a checkpoint cosigned by all three appears at `GET
//! …/checkpoint/witnessed` and passes `verify --checkpoint --witness-policy`;
//! a restarted server goes on from the sizes it stored (no refusal); an
//! evidence pack from the server and one from `chainlog evidence --data`
//! carry the witnessed checkpoint, and `check-evidence --witness-policy`
//! passes with the three witnesses and fails with a quorum the pack cannot
//! meet; a forked workspace log is refused by every witness and each
//! refusal is recorded as a `witness.refused` event in the workspace.

#[path = "support/server.rs"]
mod support;
#[path = "support/witness.rs"]
mod witness_support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{chainlog, create_key, TestServer};
use witness_support::WitnessProcess;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn run(args: &[&str]) -> Output {
    chainlog().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

struct Setup {
    tmp: tempfile::TempDir,
    data: PathBuf,
    admin: String,
    witnesses: Vec<WitnessProcess>,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        // Creating the key records it: the workspace's log exists.
        let admin = create_key(&data, "acme", "admin");
        let d = tmp.path();
        let keygen = |command: &[&str], stem: &str, name: &str| {
            let (secret, public) = (d.join(format!("{stem}.key")), d.join(format!("{stem}.pub")));
            let mut args = command.to_vec();
            args.extend(["--secret-key", p(&secret), "--public-key", p(&public)]);
            args.extend(["--name", name]);
            ok(&args);
        };
        keygen(&["-q", "keygen"], "log", "audit.example/log");
        for i in 1..=4 {
            let name = format!("w{i}.example/witness");
            keygen(&["-q", "witness", "keygen"], &format!("w{i}"), &name);
        }
        let stats: Value = serde_json::from_str(&ok(&[
            "--dir",
            p(&data.join("workspaces/acme")),
            "stats",
            "--json",
        ]))
        .unwrap();
        // Witness 4 never runs: a policy naming it cannot be met.
        let origin = format!("chainlog/{}", stats["log_id"].as_str().unwrap());
        let witnesses = witness_support::start_three(d, &origin);
        Setup {
            tmp,
            data,
            admin,
            witnesses,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn workspace(&self) -> PathBuf {
        self.data.join("workspaces/acme")
    }

    fn serve(&self) -> TestServer {
        let mut args = vec![
            "--checkpoint-key".to_string(),
            p(&self.path("log.key")).to_string(),
            "--witness-every".into(),
            "200ms".into(),
        ];
        for (i, w) in self.witnesses.iter().enumerate() {
            let vkey = read(&self.path(&format!("w{}.pub", i + 1)));
            args.push("--witness".into());
            args.push(format!("{}={}", w.url, vkey.trim()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestServer::start(&self.data, &args)
    }

    /// A policy of witnesses `which` with `quorum`.
    fn policy(&self, which: &[usize], quorum: usize) -> PathBuf {
        let mut text = String::new();
        for i in which {
            text.push_str(&format!(
                "witness {}",
                read(&self.path(&format!("w{i}.pub")))
            ));
        }
        text.push_str(&format!("quorum {quorum}\n"));
        let file = self.path(&format!("policy-{}-{quorum}", which.len()));
        std::fs::write(&file, text).unwrap();
        file
    }

    fn refusals(&self, i: usize) -> usize {
        std::fs::read_to_string(self.path(&format!("w{i}-state/refusals.jsonl")))
            .map_or(0, |t| t.lines().count())
    }
}

async fn get(client: &reqwest::Client, url: &str, key: &str) -> (u16, Vec<u8>) {
    let answer = client.get(url).bearer_auth(key).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.bytes().await.unwrap().to_vec())
}

async fn post_events(client: &reqwest::Client, srv: &TestServer, key: &str, actor: &str, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({"timestamp": "2026-03-09T09:52:14Z", "event": "auth.login", "actor": format!("{actor}{i}")})
        })
        .collect();
    let answer = client
        .post(format!("{}/v1/workspaces/acme/events", srv.url))
        .bearer_auth(key)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&events).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
}

/// Waits (up to 60 s) for a witnessed checkpoint of at least `size` records.
async fn witnessed(client: &reqwest::Client, srv: &TestServer, key: &str, size: u64) -> Value {
    let url = format!("{}/v1/workspaces/acme/checkpoint/witnessed", srv.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(client, &url, key).await;
        if status == 200 {
            let answer: Value = serde_json::from_slice(&body).unwrap();
            if answer["size"].as_u64().unwrap() >= size {
                return answer;
            }
        } else {
            assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
        }
        assert!(
            Instant::now() < deadline,
            "no witnessed checkpoint of {size} records; server stderr: {}",
            srv.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_gets_its_checkpoints_cosigned_and_packs_carry_them() {
    let s = Setup::new();
    let client = reqwest::Client::new();
    let srv = s.serve();
    let url = format!("{}/v1/workspaces/acme/checkpoint/witnessed", srv.url);
    post_events(&client, &srv, &s.admin, "a", 20).await;
    let first = witnessed(&client, &srv, &s.admin, 21).await;
    let note = first["note"].as_str().unwrap();
    assert_eq!(
        note.matches('\u{2014}').count(),
        4,
        "the log and 3 witnesses: {note}"
    );
    let (status, _) = get(&client, &url, "clk_not_a_key").await;
    assert_eq!(status, 401);
    assert!(srv.stop().0.success());

    // The stored note verifies with the witness policy.
    let cp = s.path("witnessed-1.checkpoint");
    std::fs::copy(s.data.join("witnessed/acme.checkpoint"), &cp).unwrap();
    let all = s.policy(&[1, 2, 3], 3);
    let out = ok(&[
        "--dir",
        p(&s.workspace()),
        "verify",
        "--checkpoint",
        p(&cp),
        "--public-key",
        p(&s.path("log.pub")),
        "--witness-policy",
        p(&all),
    ]);
    assert!(out.contains("witnesses: 3 cosigned"), "{out}");
    let fork = s.path("fork");
    copy_dir(&s.workspace(), &fork);

    // A restarted server goes on from the sizes it stored.
    let srv = s.serve();
    // The fork's records, all of which the witnesses may cosign before the
    // new ones arrive.
    let stats: Value = serde_json::from_str(&ok(&["--dir", p(&fork), "stats", "--json"])).unwrap();
    let before = stats["records"].as_u64().unwrap();
    post_events(&client, &srv, &s.admin, "b", 10).await;
    let second = witnessed(&client, &srv, &s.admin, before + 10).await;
    let size = second["size"].as_u64().unwrap();
    let sizes: Value =
        serde_json::from_str(&read(&s.data.join("witnessed/acme.sizes.json"))).unwrap();
    assert_eq!(sizes["witnesses"].as_object().unwrap().len(), 3, "{sizes}");
    assert!(sizes["witnesses"]
        .as_object()
        .unwrap()
        .values()
        .all(|v| v.as_u64().unwrap() >= size));
    assert_eq!((s.refusals(1), s.refusals(2), s.refusals(3)), (0, 0, 0));

    // The server's pack carries the witnessed checkpoint.
    let (status, pack) = get(
        &client,
        &format!(
            "{}/v1/workspaces/acme/evidence?since=2000-01-01T00:00:00Z&sample=3&seed=1",
            srv.url
        ),
        &s.admin,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&pack));
    let served = s.path("served.zip");
    std::fs::write(&served, pack).unwrap();
    assert!(srv.stop().0.success());
    let impossible = s.policy(&[1, 2, 3, 4], 4);
    let cli = s.path("cli.zip");
    ok(&[
        "-q",
        "evidence",
        "--data",
        p(&s.data),
        "--workspace",
        "acme",
        "--since",
        "2000-01-01T00:00:00Z",
        "--checkpoint-key",
        p(&s.path("log.key")),
        "--no-pdf",
        "--output",
        p(&cli),
    ]);
    for pack in [&served, &cli] {
        let check = |policy: &Path| {
            run(&[
                "check-evidence",
                p(pack),
                "--key",
                p(&s.path("log.pub")),
                "--witness-policy",
                p(policy),
            ])
        };
        let out = check(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("witnessed checkpoint included"), "{stdout}");
        assert!(stdout.contains("witnesses: 3 cosigned"), "{stdout}");
        let out = check(&impossible);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("3 of the policy's witnesses cosigned")
        );
    }

    // A fork: the log as it was at the first checkpoint, grown otherwise.
    std::fs::remove_dir_all(s.workspace()).unwrap();
    copy_dir(&fork, &s.workspace());
    let forged = s.path("forged.jsonl");
    let lines: String = (0..size + 5)
        .map(|i| format!("{{\"timestamp\":\"2026-03-09T09:52:14Z\",\"event\":\"auth.login\",\"actor\":\"forged{i}\"}}\n"))
        .collect();
    std::fs::write(&forged, lines).unwrap();
    ok(&["-q", "--dir", p(&s.workspace()), "append", p(&forged)]);
    let srv = s.serve();
    let refused = format!(
        "{}/v1/workspaces/acme/events?event=witness.refused",
        srv.url
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let (status, body) = get(&client, &refused, &s.admin).await;
        assert_eq!(status, 200);
        let page: Value = serde_json::from_slice(&body).unwrap();
        let events = page["events"].as_array().unwrap().clone();
        if events.len() >= 3 {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "no refusals: {}\nsizes {}\nwitness 1: {}",
            srv.stderr(),
            read(&s.data.join("witnessed/acme.sizes.json")),
            std::fs::read_to_string(s.path("w1-state.stderr")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for e in &events {
        assert_eq!(e["outcome"], "failure", "{e}");
        assert!(
            e["context"]["reason"].as_str().unwrap().contains("422"),
            "{e}"
        );
    }
    // The witnessed checkpoint is still the one before the fork.
    let kept = witnessed(&client, &srv, &s.admin, 0).await;
    assert_eq!(kept["note"], second["note"]);
    // Recorded once in the log, though refused at every round.
    let (_, body) = get(&client, &refused, &s.admin).await;
    let page: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 3, "{page}");
    assert!(srv.stop().0.success());
    assert!((1..=3).all(|i| s.refusals(i) >= 1));
}
