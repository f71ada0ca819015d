//! Keys that cannot be taken over, and who may touch a log's files
//! (issue 15, findings 5, 6, 12 and 14): `keys.json` refused when others may
//! write it, changes made outside the API recorded, the CLI's break-glass
//! path while the server runs, `--admin-keys local-only`, private file
//! modes (and `--group`), no symbolic link followed, refusal on another
//! user's log, and `chainlog apikey` without its 5-second wait.
//!
//! CI runs as root, which passes every permission check of the OS; these
//! tests check chainlog's own checks, with files chowned to uid 65534.

#[path = "support/server.rs"]
mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chainlog::{Log, Options, Record};
use serde_json::Value;
use support::TestServer;
use support::{chainlog, create_key, key_id, raw_get, raw_request, small_segment_workspace};

/// Another user's id (`nobody` on Debian).
const OTHER_UID: u32 = 65534;

fn records(dir: &Path) -> Vec<Record> {
    let log = Log::open(dir, Options::for_reading()).unwrap();
    log.iter_from(0).map(Result::unwrap).collect()
}

/// How many records of `event_type` `dir`'s log holds.
fn count_records(dir: &Path, event_type: &str) -> usize {
    records(dir)
        .iter()
        .filter(|r| r.event.event_type == event_type)
        .count()
}

/// Polls `dir`'s log until a record satisfies `found` (the server records
/// outside changes within half a second; the deadline is for slow CI).
fn wait_for_record(dir: &Path, what: &str, found: impl Fn(&Record) -> bool) -> Record {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The log may not exist yet, or be half created.
        let read_only = Options::for_reading();
        if let Ok(log) = Log::open(dir, read_only) {
            if let Some(r) = log.iter_from(0).map(Result::unwrap).find(|r| found(r)) {
                return r;
            }
        }
        assert!(Instant::now() < deadline, "no {what} in {}", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> (u16, String) {
    let body_headers = body.map_or(String::new(), |b| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )
    });
    raw_request(
        server.addr,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n{body_headers}Connection: close\r\n\r\n{}",
            body.unwrap_or("")
        )
        .as_bytes(),
    )
}

fn events_ok(server: &TestServer, key: &str) -> u16 {
    raw_get(server.addr, "/v1/workspaces/acme/events", Some(key)).0
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
}

/// `chainlog serve` that must refuse to start; returns its stderr.
fn serve_refused(data: &Path, extra: &[&str]) -> String {
    let mut child = chainlog()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that starts runs until stopped: give it time to refuse.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8(out.stderr).unwrap()
}

fn keys_json(data: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(data.join("keys.json")).unwrap()).unwrap()
}

/// Writes `keys.json` in place (as an editor would), keeping its mode.
fn edit_keys(data: &Path, edit: impl FnOnce(&mut Value)) {
    let mut file = keys_json(data);
    edit(&mut file);
    fs::write(
        data.join("keys.json"),
        serde_json::to_string_pretty(&file).unwrap(),
    )
    .unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    small_segment_workspace(&data, "acme");
    (tmp, data)
}

/// Finding 14: each command waited out the 5-second grace of closing the
/// log it still held itself.
#[test]
fn apikey_commands_do_not_wait() {
    let (_tmp, data) = setup();
    let timed = |args: &[&str]| {
        let started = Instant::now();
        let out = chainlog()
            .arg("apikey")
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let took = started.elapsed();
        // With the bug every command took 5 s and more.
        assert!(took < Duration::from_millis(4500), "{args:?} took {took:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let key = timed(&["create", "--workspace", "acme", "--scope", "read"]);
    let id = key_id(key.lines().last().unwrap()).to_string();
    timed(&["rotate", &id]);
    timed(&["revoke", &id]);
    let types: Vec<String> = records(&data.join("workspaces/acme"))
        .into_iter()
        .map(|r| r.event.event_type)
        .collect();
    assert_eq!(
        types,
        ["apikey.created", "apikey.rotated", "apikey.revoked"]
    );
}

/// Finding 5: a key file (or data directory) others may write, or that
/// another user owns, or a link, is refused at start.
#[test]
fn an_unsafe_key_file_stops_the_server_from_starting() {
    let (_tmp, data) = setup();
    create_key(&data, "acme", "admin");
    let keys = data.join("keys.json");
    for mode in [0o666, 0o620, 0o602] {
        chmod(&keys, mode);
        let stderr = serve_refused(&data, &[]);
        assert!(
            stderr.contains("keys.json") && stderr.contains(&format!("mode {mode:04o}")),
            "{mode:o}: {stderr}"
        );
    }
    chmod(&keys, 0o600);
    chown(&keys, OTHER_UID);
    let stderr = serve_refused(&data, &[]);
    assert!(
        stderr.contains(&format!("owned by uid {OTHER_UID}")),
        "{stderr}"
    );
    chown(&keys, 0);
    chmod(&data, 0o777);
    let stderr = serve_refused(&data, &[]);
    assert!(stderr.contains("data directory has mode 0777"), "{stderr}");
    chmod(&data, 0o700);
    let elsewhere = data.with_file_name("elsewhere.json");
    fs::rename(&keys, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &keys).unwrap();
    let stderr = serve_refused(&data, &[]);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    // The CLI refuses the same file.
    let out = chainlog()
        .args(["apikey", "list", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    fs::remove_file(&keys).unwrap();
    fs::rename(&elsewhere, &keys).unwrap();
    TestServer::start(&data, &[]).stop();
}

/// Finding 5, the attack itself: with `keys.json` made world-writable,
/// another user adds an admin key. The reload is refused, recorded in the
/// server's log, and the keys as last read stay in force.
#[test]
fn a_reload_of_an_unsafe_key_file_is_refused_and_recorded() {
    let (_tmp, data) = setup();
    let admin = create_key(&data, "acme", "admin");
    // The intruder's key, made in another data directory and copied in.
    let other = data.with_file_name("other");
    let intruder = create_key(&other, "acme", "admin");
    let intruder_entry = keys_json(&other)["keys"][0].clone();

    let server = TestServer::start(&data, &[]);
    assert_eq!(events_ok(&server, &admin), 200);
    chmod(&data.join("keys.json"), 0o666);
    edit_keys(&data, |file| {
        file["keys"].as_array_mut().unwrap().push(intruder_entry);
    });
    assert_eq!(events_ok(&server, &intruder), 401, "the added key works");
    assert_eq!(
        events_ok(&server, &admin),
        200,
        "the old keys stay in force"
    );
    let refused = wait_for_record(&data.join("server-log"), "apikey.reload_refused", |r| {
        r.event.event_type == "apikey.reload_refused"
    });
    let reason = refused.event.context["reason"].as_str().unwrap();
    assert!(reason.contains("mode 0666"), "{reason}");

    // Put right, the file is read again: the edit is now the owner's, and
    // it is recorded in the workspace's log as a key created via keys.json.
    chmod(&data.join("keys.json"), 0o600);
    let created = wait_for_record(&data.join("workspaces/acme"), "apikey.created", |r| {
        r.event.event_type == "apikey.created" && r.event.context.get("via").is_some()
    });
    assert_eq!(created.event.context["key_id"], key_id(&intruder));
    assert_eq!(created.event.actor, "system");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let refusals = count_records(&data.join("server-log"), "apikey.reload_refused");
    assert_eq!(refusals, 1, "one refusal recorded, not one per look");
}

/// Finding 5: every change made by editing the file is an event in the
/// key's workspace, and takes effect.
#[test]
fn edits_to_the_key_file_are_recorded_in_the_workspace() {
    let (_tmp, data) = setup();
    let admin = create_key(&data, "acme", "admin");
    let reader = create_key(&data, "acme", "read");
    let server = TestServer::start(&data, &[]);
    let (status, _) = request(&server, "GET", "/v1/workspaces/acme/keys", &reader, None);
    assert_eq!(status, 403);
    edit_keys(&data, |file| {
        for key in file["keys"].as_array_mut().unwrap() {
            if key["id"] == key_id(&reader) {
                key["scope"] = "admin".into();
            }
        }
    });
    let changed = wait_for_record(&data.join("workspaces/acme"), "apikey.scope_changed", |r| {
        r.event.event_type == "apikey.scope_changed"
    });
    assert_eq!(changed.event.context["key_id"], key_id(&reader));
    assert_eq!(changed.event.context["old_scope"], "read");
    assert_eq!(changed.event.context["scope"], "admin");
    assert_eq!(changed.event.context["via"], "keys.json");
    let (status, _) = request(&server, "GET", "/v1/workspaces/acme/keys", &reader, None);
    assert_eq!(status, 200);

    // A key deleted from the file.
    edit_keys(&data, |file| {
        file["keys"]
            .as_array_mut()
            .unwrap()
            .retain(|k| k["id"] != key_id(&admin));
    });
    wait_for_record(&data.join("workspaces/acme"), "apikey.removed", |r| {
        r.event.event_type == "apikey.removed" && r.event.context["key_id"] == key_id(&admin)
    });
    assert_eq!(events_ok(&server, &admin), 401);
    // Changes made through the API are recorded once, by the API.
    let (status, _) = request(
        &server,
        "POST",
        "/v1/workspaces/acme/keys",
        &reader,
        Some(r#"{"scope":"append"}"#),
    );
    assert_eq!(status, 201);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let created = count_records(&data.join("workspaces/acme"), "apikey.created");
    assert_eq!(created, 3, "two by the CLI, one over HTTP, none twice");
}

/// Finding 6: the CLI revokes (and creates, and rotates) while the server
/// runs and holds the workspace's log; it takes effect at once and the
/// server records the event.
#[test]
fn the_cli_revokes_a_key_while_the_server_runs() {
    let (_tmp, data) = setup();
    let stolen = create_key(&data, "acme", "admin");
    let server = TestServer::start(&data, &[]);
    // The server now holds acme's log.
    assert_eq!(events_ok(&server, &stolen), 200);
    let out = chainlog()
        .args(["apikey", "revoke", "--actor", "oncall", "--data"])
        .arg(&data)
        .arg(key_id(&stolen))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("running server") && stdout.contains("recorded apikey.revoked as seq"),
        "{stdout}"
    );
    assert_eq!(events_ok(&server, &stolen), 401, "revoked at once");
    let revoked = wait_for_record(&data.join("workspaces/acme"), "apikey.revoked", |r| {
        r.event.event_type == "apikey.revoked"
    });
    // The seq the CLI printed is the event's, written back into keys.json.
    assert!(
        stdout.contains(&format!("as seq {})", revoked.seq)),
        "{stdout}"
    );
    let entry = keys_json(&data)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id(&stolen))
        .cloned()
        .unwrap();
    assert_eq!(entry["event_seq"], revoked.seq);
    assert!(entry.get("pending_by").is_none(), "{entry}");
    assert_eq!(revoked.event.context["key_id"], key_id(&stolen));
    assert_eq!(revoked.event.context["changed_by"], "oncall");

    let fresh = create_key(&data, "acme", "admin");
    assert_eq!(events_ok(&server, &fresh), 200);
    wait_for_record(&data.join("workspaces/acme"), "apikey.created", |r| {
        r.event.event_type == "apikey.created" && r.event.context["key_id"] == key_id(&fresh)
    });
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let revocations = count_records(&data.join("workspaces/acme"), "apikey.revoked");
    assert_eq!(revocations, 1);
}

/// Finding 6: under `--admin-keys local-only` an admin key over HTTP
/// cannot create, rotate or revoke admin keys; it still manages append and
/// read keys.
#[test]
fn admin_keys_local_only() {
    let (_tmp, data) = setup();
    let stolen = create_key(&data, "acme", "admin");
    let real = create_key(&data, "acme", "admin");
    let server = TestServer::start(&data, &["--admin-keys", "local-only"]);
    let keys = "/v1/workspaces/acme/keys";
    let (status, body) = request(&server, "POST", keys, &stolen, Some(r#"{"scope":"admin"}"#));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin_keys_local_only"), "{body}");
    let real_path = format!("{keys}/{}", key_id(&real));
    let (status, _) = request(&server, "DELETE", &real_path, &stolen, None);
    assert_eq!(status, 403);
    let (status, _) = request(
        &server,
        "POST",
        &format!("{real_path}/rotate"),
        &stolen,
        None,
    );
    assert_eq!(status, 403);
    assert_eq!(events_ok(&server, &real), 200, "the real key still works");
    let (status, body) = request(&server, "POST", keys, &stolen, Some(r#"{"scope":"read"}"#));
    assert_eq!(status, 201, "{body}");
    let reader: Value = serde_json::from_str(&body).unwrap();
    let reader_path = format!("{keys}/{}", reader["id"].as_str().unwrap());
    let (status, _) = request(&server, "DELETE", &reader_path, &stolen, None);
    assert_eq!(status, 200);
    // The machine's own path still works for admin keys.
    let out = chainlog()
        .args(["apikey", "revoke", "--data"])
        .arg(&data)
        .arg(key_id(&stolen))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(events_ok(&server, &stolen), 401);
    server.stop();

    // Without the flag, admin keys can be made over HTTP (the default).
    let server = TestServer::start(&data, &[]);
    let (status, _) = request(&server, "POST", keys, &real, Some(r#"{"scope":"admin"}"#));
    assert_eq!(status, 201);
    server.stop();
}

fn modes_under(dir: &Path, out: &mut Vec<(PathBuf, u32, u32)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.mode() & 0o7777, meta.gid()));
        if meta.is_dir() {
            modes_under(&path, out);
        }
    }
}

/// Finding 12: logs are private by default, and shared read-only with a
/// group when asked.
#[test]
fn files_are_private_by_default_and_group_readable_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &[]);
    let (status, body) = raw_request(
        server.addr,
        format!(
            "POST /v1/workspaces/acme/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: close\r\n\r\n{{\"event\":\"a.b\",\"actor\":\"x\"}}"
        )
        .as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    // A refusal creates the server's log too.
    assert_eq!(
        raw_get(server.addr, "/v1/workspaces/nope/events", None).0,
        401
    );
    server.stop();
    let mut all = vec![(
        data.clone(),
        fs::metadata(&data).unwrap().mode() & 0o7777,
        0,
    )];
    modes_under(&data, &mut all);
    assert!(all.iter().any(|(p, ..)| p.ends_with("server-log")));
    for (path, mode, _) in &all {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{}", path.display());
    }

    let log = tmp.path().join("shared");
    let out = chainlog()
        .args([
            "init",
            "--segment-bytes",
            "128KiB",
            "--group",
            "65534",
            "--dir",
        ])
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut append = chainlog()
        .args(["append", "--dir"])
        .arg(&log)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = append.stdin.take().unwrap();
    for i in 0..2000 {
        writeln!(
            stdin,
            r#"{{"event":"a.b","actor":"x","context":{{"i":{i}}}}}"#
        )
        .unwrap();
    }
    drop(stdin);
    assert!(append.wait().unwrap().success());
    assert_eq!(fs::metadata(&log).unwrap().mode() & 0o7777, 0o2750);
    let mut all = Vec::new();
    modes_under(&log, &mut all);
    assert!(all.len() > 3, "{all:?}");
    for (path, mode, gid) in &all {
        let want = if path.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode & 0o777, want, "{}", path.display());
        assert_eq!(*gid, 65534, "{}", path.display());
    }
}

/// Finding 12: a symbolic link inside a log directory is never followed.
#[test]
fn links_inside_a_log_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    Log::create(&dir, Options::default())
        .and_then(Log::close)
        .unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    // `tile/` pointing out of the log.
    std::os::unix::fs::symlink(&elsewhere, dir.join("tile")).unwrap();
    let err = Log::open(&dir, Options::default()).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    fs::remove_file(dir.join("tile")).unwrap();
    // Deeper down: a level of `tile/` pointing out of the log.
    fs::create_dir(dir.join("tile")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("tile/0")).unwrap();
    let err = Log::open(&dir, Options::default()).unwrap_err();
    assert!(err.to_string().contains("tile/0"), "{err}");
    fs::remove_dir_all(dir.join("tile")).unwrap();
    // A segment replaced by a link to a copy of itself.
    let segment = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let copy = elsewhere.join("copy.seg");
    fs::copy(&segment, &copy).unwrap();
    fs::remove_file(&segment).unwrap();
    std::os::unix::fs::symlink(&copy, &segment).unwrap();
    let err = Log::open(&dir, Options::default()).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let read_only = Options::for_reading();
    let err = Log::open(&dir, read_only).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

/// Finding 12: a TLS private key others may read is refused.
#[test]
fn a_tls_key_others_can_read_is_refused() {
    let (_tmp, data) = setup();
    let (cert, key) = (
        data.with_file_name("cert.pem"),
        data.with_file_name("key.pem"),
    );
    fs::write(&cert, "not read: the key is refused first").unwrap();
    fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    for mode in [0o644, 0o640, 0o604] {
        chmod(&key, mode);
        let args = [
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        let stderr = serve_refused(&data, &args);
        assert!(
            stderr.contains("TLS private key") && stderr.contains(&format!("mode {mode:04o}")),
            "{mode:o}: {stderr}"
        );
    }
}

/// Finding 12: root running the CLI on a service user's log is refused
/// (it would leave root-owned files), unless told otherwise.
#[test]
fn writing_to_another_users_log_is_refused() {
    let (tmp, data) = setup();
    let log = tmp.path().join("log");
    Log::create(&log, Options::default())
        .unwrap()
        .close()
        .unwrap();
    let before: Vec<_> = fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    chown(&log, OTHER_UID);
    let append = |extra: &[&str]| {
        let mut child = chainlog()
            .args(extra)
            .args(["append", "--dir"])
            .arg(&log)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = writeln!(stdin, r#"{{"event":"a.b","actor":"x"}}"#);
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let out = append(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("owned by uid {OTHER_UID}")),
        "{stderr}"
    );
    let after: Vec<_> = fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before, after, "nothing was written");
    let out = append(&["--allow-other-owner"]);
    assert!(out.status.success(), "{out:?}");

    chown(&data, OTHER_UID);
    let out = chainlog()
        .args([
            "apikey",
            "create",
            "--workspace",
            "acme",
            "--scope",
            "read",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("owned by uid"));
    assert!(!data.join("keys.json").exists());
    let stderr = serve_refused(&data, &[]);
    assert!(stderr.contains("owned by uid"), "{stderr}");
    // The explicit override (modes are still checked).
    let out = chainlog()
        .args(["apikey", "create", "--workspace", "acme", "--scope", "read"])
        .args(["--allow-other-owner", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    chown(&data.join("keys.json"), OTHER_UID);
    let list = |extra: &[&str]| {
        chainlog()
            .args(["apikey", "list", "--data"])
            .arg(&data)
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(!list(&[]).status.success());
    assert!(list(&["--allow-other-owner"]).status.success());
    chmod(&data.join("keys.json"), 0o666);
    assert!(!list(&["--allow-other-owner"]).status.success());
}
