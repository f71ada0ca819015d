//! Witness cosigning end to end: three `chainlog witness serve` processes
//! on loopback, each with its own key and state directory, and logs that
//! submit checkpoints to them with `chainlog checkpoint --witness`.
//!
//! Normal growth is cosigned by all three, and the cosigned note is checked
//! by Go (`tests/go/notecheck cosigned`: x/mod's note.Open with its own
//! Ed25519 verifier for the log key and a verifier written from C2SP
//! tlog-cosignature for the witnesses). A fork of the log (the same key and
//! origin, other records) is refused by every witness and recorded in its
//! refusals.jsonl; so is a rollback. `verify` and `check-bundle` reject a
//! checkpoint with fewer valid cosignatures than the policy asks. A
//! restarted witness keeps its state. The protocol's status codes (400,
//! 403, 404, 409, 422) are checked with raw requests.

#[path = "support/go.rs"]
mod go_support;
#[path = "support/server.rs"]
mod support;
#[path = "support/witness.rs"]
mod witness_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::{chainlog, raw_request};
use witness_support::WitnessProcess;

/// Runs chainlog with `args` and returns its output.
fn run(args: &[&str]) -> Output {
    chainlog().args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A log, its key, three witness keys and their logs file.
struct Setup {
    dir: tempfile::TempDir,
    witnesses: Vec<WitnessProcess>,
}

impl Setup {
    /// A log of `records` events and three running witnesses.
    fn new(records: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ok(run(&[
            "--dir",
            path(&d.join("log")),
            "init",
            "--segment-bytes",
            "128KiB",
        ]));
        append(&d.join("log"), "a", records);
        log_keygen(d, "log");
        for i in 1..=3 {
            let out = keygen(
                d,
                &["witness", "keygen"],
                &format!("w{i}"),
                &format!("w{i}.example/witness"),
            );
            let vkey = std::fs::read_to_string(d.join(format!("w{i}.pub"))).unwrap();
            assert!(out.ends_with(&vkey), "keygen prints the vkey: {out}");
        }
        let witnesses = witness_support::start_three(d, &origin(&d.join("log")));
        Setup { dir, witnesses }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `URL=VKEY` of witness `i` (1-based).
    fn witness_arg(&self, i: usize) -> String {
        format!(
            "{}={}",
            self.witnesses[i - 1].url,
            read(&self.p(&format!("w{i}.pub"))).trim()
        )
    }

    /// `chainlog checkpoint` of `log` to `output` with witnesses `which`.
    fn checkpoint(
        &self,
        log: &str,
        output: &str,
        which: &[usize],
        quorum: Option<usize>,
    ) -> Output {
        let mut args = vec![
            "--dir".to_string(),
            path(&self.p(log)).to_string(),
            "checkpoint".into(),
            "--secret-key".into(),
            path(&self.p("log.key")).to_string(),
            "--output".into(),
            path(&self.p(output)).to_string(),
        ];
        for &i in which {
            args.push("--witness".into());
            args.push(self.witness_arg(i));
        }
        if let Some(q) = quorum {
            args.push("--witness-quorum".into());
            args.push(q.to_string());
        }
        chainlog().args(&args).output().unwrap()
    }

    /// A policy file of all three witnesses with `quorum`.
    fn policy(&self, quorum: usize) -> PathBuf {
        let mut text = String::from("# the three test witnesses\n");
        for i in 1..=3 {
            text.push_str(&format!("witness {}", read(&self.p(&format!("w{i}.pub")))));
        }
        text.push_str(&format!("quorum {quorum}\n"));
        let file = self.p(&format!("policy-{quorum}"));
        std::fs::write(&file, text).unwrap();
        file
    }

    /// `chainlog verify --checkpoint CP --witness-policy POLICY` of the log.
    fn verify(&self, cp: &Path, policy: &Path) -> Output {
        run(&[
            "--dir",
            path(&self.p("log")),
            "verify",
            "--checkpoint",
            path(cp),
            "--public-key",
            path(&self.p("log.pub")),
            "--witness-policy",
            path(policy),
        ])
    }

    fn refusals(&self, i: usize) -> Vec<serde_json::Value> {
        read(&self.p(&format!("w{i}-state/refusals.jsonl")))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn append(log: &Path, actor: &str, n: usize) {
    let events: String = (0..n)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2026-03-09T09:52:14Z\",\"event\":\"auth.login\",\"actor\":\"{actor}{i}\"}}\n"
            )
        })
        .collect();
    let file = log.with_extension(format!("{actor}.jsonl"));
    std::fs::write(&file, events).unwrap();
    ok(run(&["-q", "--dir", path(log), "append", path(&file)]));
}

/// A log key pair `STEM.key`, `STEM.pub` in `dir`, named audit.example/log.
fn log_keygen(dir: &Path, stem: &str) {
    keygen(dir, &["-q", "keygen"], stem, "audit.example/log");
}

/// Runs `COMMAND… --secret-key DIR/STEM.key --public-key DIR/STEM.pub --name NAME`.
fn keygen(dir: &Path, command: &[&str], stem: &str, name: &str) -> String {
    let mut args = command.to_vec();
    let (secret, public) = (
        dir.join(format!("{stem}.key")),
        dir.join(format!("{stem}.pub")),
    );
    args.extend(["--secret-key", path(&secret), "--public-key", path(&public)]);
    args.extend(["--name", name]);
    ok(run(&args))
}

fn origin(log: &Path) -> String {
    let stats: serde_json::Value =
        serde_json::from_str(&ok(run(&["--dir", path(log), "stats", "--json"]))).unwrap();
    format!("chainlog/{}", stats["log_id"].as_str().unwrap())
}

/// The signature lines' key names.
fn signers(note: &str) -> Vec<String> {
    let (_, sigs) = note.rsplit_once("\n\n").unwrap();
    sigs.lines()
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect()
}

#[test]
fn growth_is_cosigned_by_all_three_witnesses_and_go_checks_it() {
    let s = Setup::new(40);
    ok(s.checkpoint("log", "cp", &[1, 2, 3], None));
    let first = read(&s.p("cp"));
    assert_eq!(
        signers(&first),
        [
            "audit.example/log",
            "w1.example/witness",
            "w2.example/witness",
            "w3.example/witness"
        ]
    );
    // The log grows across segment boundaries; the next checkpoint goes to
    // the same file, so the witnesses are asked with its size (40) and a
    // consistency proof from there.
    append(&s.p("log"), "b", 1200);
    ok(s.checkpoint("log", "cp", &[1, 2, 3], None));
    let note = read(&s.p("cp"));
    assert!(note.contains("\n1240\n"), "{note}");
    assert_eq!(signers(&note).len(), 4);
    for i in 1..=3 {
        assert!(
            s.refusals(i).is_empty(),
            "no refusals for normal growth: {:?}",
            s.refusals(i)
        );
        let state: Vec<_> = std::fs::read_dir(s.p(&format!("w{i}-state/logs")))
            .unwrap()
            .collect();
        assert_eq!(state.len(), 1);
    }
    let out = ok(s.verify(&s.p("cp"), &s.policy(3)));
    assert!(
        out.contains("witnesses: 3 cosigned (the policy asks for 3)"),
        "{out}"
    );

    // The monitoring endpoint serves the newest cosigned checkpoint.
    let hash = sha256_hex(&origin(&s.p("log")));
    let (status, body) =
        support::raw_get(s.witnesses[0].addr, &format!("/{hash}/checkpoint"), None);
    assert_eq!(status, 200);
    assert!(
        body.contains("\n1240\n") && body.contains("\u{2014} w1.example/witness "),
        "{body}"
    );
    let (status, _) = support::raw_get(
        s.witnesses[0].addr,
        &format!("/{}/checkpoint", "0".repeat(64)),
        None,
    );
    assert_eq!(status, 404);

    // An outside implementation: Go's x/mod note.Open with the log's key
    // and the three witnesses' keys.
    let Some(notecheck) = go_support::notecheck("witness") else {
        return;
    };
    let go = |note: &Path| {
        std::process::Command::new(&notecheck)
            .arg("cosigned")
            .arg(s.p("log.pub"))
            .arg(note)
            .args((1..=3).map(|i| s.p(&format!("w{i}.pub"))))
            .output()
            .unwrap()
    };
    let out = ok(go(&s.p("cp")));
    for i in 1..=3 {
        assert!(
            out.contains(&format!("cosigned w{i}.example/witness ")),
            "{out}"
        );
    }
    // One changed byte of a cosignature fails in Go too.
    let mut bytes = note.into_bytes();
    let at = bytes.len() - 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(s.p("bad"), bytes).unwrap();
    assert!(!go(&s.p("bad")).status.success());
    let _ = std::fs::remove_file(notecheck);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Copies a (closed) log directory.
fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_forked_log_is_refused_by_every_witness_and_recorded() {
    let s = Setup::new(30);
    ok(s.checkpoint("log", "cp", &[1, 2, 3], None));
    // The operator forks: a copy with the same log id, key and origin.
    copy_dir(&s.p("log"), &s.p("fork"));
    copy_dir(&s.p("log"), &s.p("short-fork"));
    std::fs::copy(s.p("cp"), s.p("fork-cp")).unwrap();
    append(&s.p("log"), "real", 10);
    ok(s.checkpoint("log", "cp", &[1, 2, 3], None));

    // A fork larger than what the witnesses cosigned: they ask for a proof
    // from size 40 and the fork's tree at 40 is not theirs.
    append(&s.p("fork"), "forged", 15);
    let out = s.checkpoint("fork", "fork-cp", &[1, 2, 3], Some(1));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 of 3 witnesses cosigned"), "{stderr}");
    // The fork's checkpoint file was not replaced by an uncosigned one.
    assert_eq!(read(&s.p("fork-cp")).lines().nth(1), Some("30"));
    for i in 1..=3 {
        let refusals = s.refusals(i);
        assert_eq!(refusals.len(), 1, "witness {i}: {refusals:?}");
        assert_eq!(refusals[0]["status"], 422);
        assert_eq!(refusals[0]["old_size"], 40);
        assert_eq!(refusals[0]["size"], 45);
        assert!(refusals[0]["note"].as_str().unwrap().contains("\n45\n"));
    }

    // A fork smaller than what they cosigned (a rollback): refused (409
    // with their size), and recorded too.
    append(&s.p("short-fork"), "forged", 5);
    let out = s.checkpoint("short-fork", "short-cp", &[1, 2, 3], Some(1));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("has cosigned a tree of 40 records"));
    for i in 1..=3 {
        let refusals = s.refusals(i);
        assert_eq!(refusals.len(), 2, "witness {i}: {refusals:?}");
        assert_eq!(refusals[1]["status"], 409);
        assert_eq!(refusals[1]["size"], 35);
    }

    // The real log still grows and is cosigned.
    append(&s.p("log"), "real", 3);
    ok(s.checkpoint("log", "cp", &[1, 2, 3], None));
    assert_eq!(signers(&read(&s.p("cp"))).len(), 4);
}

#[test]
fn fewer_cosignatures_than_the_policy_fail_verify_and_check_bundle() {
    let s = Setup::new(25);
    // Only witness 1 is asked.
    ok(s.checkpoint("log", "cp", &[1], None));
    ok(run(&[
        "--dir",
        path(&s.p("log")),
        "export",
        "--format",
        "bundle",
        "--checkpoint",
        path(&s.p("cp")),
        "--output",
        path(&s.p("bundle.json")),
    ]));
    let verify = |policy: &Path, cp: &Path| s.verify(cp, policy);
    let check_bundle = |policy: &Path, bundle: &Path| {
        run(&[
            "check-bundle",
            path(bundle),
            "--public-key",
            path(&s.p("log.pub")),
            "--witness-policy",
            path(policy),
        ])
    };
    let (one, two) = (s.policy(1), s.policy(2));
    ok(verify(&one, &s.p("cp")));
    let out = ok(check_bundle(&one, &s.p("bundle.json")));
    assert!(
        out.contains("witnesses: 1 cosigned (the policy asks for 1)"),
        "{out}"
    );
    for out in [
        verify(&two, &s.p("cp")),
        check_bundle(&two, &s.p("bundle.json")),
    ] {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "1 of the policy's witnesses cosigned the checkpoint; the policy asks for 2"
            ),
            "{stderr}"
        );
    }

    // A forged cosignature (one changed byte) fails even a quorum of 1.
    let note = read(&s.p("cp"));
    let line = note.lines().last().unwrap();
    assert!(line.starts_with("\u{2014} w1.example/witness "));
    let mut forged_line = line.to_string();
    let at = forged_line.len() - 6;
    let c = if &forged_line[at..=at] == "A" {
        "B"
    } else {
        "A"
    };
    forged_line.replace_range(at..=at, c);
    std::fs::write(s.p("forged"), note.replace(line, &forged_line)).unwrap();
    let out = verify(&one, &s.p("forged"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not verify"));
    let bundle = read(&s.p("bundle.json")).replace(line, &forged_line);
    assert_ne!(bundle, read(&s.p("bundle.json")));
    std::fs::write(s.p("forged.json"), bundle).unwrap();
    assert_eq!(
        check_bundle(&one, &s.p("forged.json")).status.code(),
        Some(1)
    );

    // A checkpoint asked of all three with --witness-quorum 3 when one is
    // down: nothing is written, and the exit code says why (not integrity).
    let mut s = s;
    s.witnesses.remove(2).stop();
    let before = read(&s.p("cp"));
    append(&s.p("log"), "more", 2);
    let mut command = chainlog();
    command
        .args(["--dir", path(&s.p("log")), "checkpoint", "--secret-key"])
        .arg(s.p("log.key"))
        .arg("--output")
        .arg(s.p("cp"));
    for i in 1..=2 {
        command.args(["--witness", &s.witness_arg(i)]);
    }
    command.args([
        "--witness",
        &format!("http://127.0.0.1:9={}", read(&s.p("w3.pub")).trim()),
    ]);
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(read(&s.p("cp")), before);
}

/// A raw `add-checkpoint` request; returns the status, the body and the
/// whole response's text.
fn add_checkpoint(addr: SocketAddr, body: &str) -> (u16, String) {
    let request = format!(
        "POST /add-checkpoint HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_request(addr, request.as_bytes())
}

#[test]
fn a_restarted_witness_keeps_its_state_and_answers_with_the_protocols_codes() {
    let mut s = Setup::new(20);
    ok(s.checkpoint("log", "cp20", &[1], None));
    append(&s.p("log"), "b", 5);
    ok(s.checkpoint("log", "cp25", &[1], None));
    let w1 = s.witnesses.remove(0);
    let old_addr = w1.addr;
    w1.stop();
    let w1 = WitnessProcess::start(&s.p("w1.key"), &s.p("logs.json"), &s.p("w1-state"));
    assert_ne!(w1.addr, old_addr);

    // The 20-record checkpoint (log-signed only) again: a rollback.
    let note20 = read(&s.p("cp20"));
    let note20 = note20[..note20.find("\u{2014} w1").unwrap()].to_string();
    let (status, body) = add_checkpoint(w1.addr, &format!("old 0\n\n{note20}"));
    assert_eq!((status, body.as_str()), (409, "25\n"));
    let raw = format!("old 0\n\n{note20}");
    let request = format!(
        "POST /add-checkpoint HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{raw}",
        raw.len()
    );
    let mut stream = std::net::TcpStream::connect(w1.addr).unwrap();
    use std::io::{Read, Write};
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: text/x.tlog.size"),
        "{response}"
    );
    // Old size beyond the checkpoint: 400.
    let (status, _) = add_checkpoint(w1.addr, &format!("old 25\n\n{note20}"));
    assert_eq!(status, 400);
    // The same size it knows, with its root: cosigned again.
    let note25 = read(&s.p("cp25"));
    let (status, body) = add_checkpoint(w1.addr, &format!("old 25\n\n{note25}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("\u{2014} w1.example/witness ") && body.ends_with('\n'));
    // The same size with another root: 422.
    let other_root = note25.replacen(
        note25.lines().nth(2).unwrap(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        1,
    );
    let (status, _) = add_checkpoint(w1.addr, &format!("old 25\n\n{other_root}"));
    assert_eq!(status, 403, "the changed note's log signature fails first");
    // A bad proof for a real larger checkpoint: 422.
    append(&s.p("log"), "c", 5);
    ok(s.checkpoint("log", "cp30", &[], None));
    let note30 = read(&s.p("cp30"));
    let (status, _) = add_checkpoint(
        w1.addr,
        &format!("old 25\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n{note30}"),
    );
    assert_eq!(status, 422);
    let (status, _) = add_checkpoint(
        w1.addr,
        &format!("old 0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n{note30}"),
    );
    assert_eq!(status, 409, "the old size is checked before the proof");
    // An unknown origin: 404; a note signed by another key: 403.
    let (status, _) = add_checkpoint(
        w1.addr,
        &format!("old 0\n\n{}", note30.replacen("chainlog/", "other/", 1)),
    );
    assert_eq!(status, 404);
    log_keygen(s.dir.path(), "other");
    let other = run(&[
        "--dir",
        path(&s.p("log")),
        "checkpoint",
        "--secret-key",
        path(&s.p("other.key")),
    ]);
    let (status, _) = add_checkpoint(w1.addr, &format!("old 25\n\n{}", ok(other)));
    assert_eq!(status, 403);
    // Malformed: 400.
    let (status, _) = add_checkpoint(w1.addr, "old x\n\nnot a note\n");
    assert_eq!(status, 400);
    let refusals = s.refusals(1);
    assert!(
        refusals
            .iter()
            .any(|r| r["status"] == 409 && r["size"] == 20),
        "the rollback is recorded: {refusals:?}"
    );
    assert!(refusals
        .iter()
        .any(|r| r["status"] == 422 && r["size"] == 30));

    // A second witness on the same state directory is refused.
    let second =
        witness_support::serve_command(&s.p("w1.key"), &s.p("logs.json"), &s.p("w1-state"))
            .output()
            .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another witness"));
    w1.stop();
}
