//! Builds `tests/go/notecheck`, the outside implementation (Go's
//! `golang.org/x/mod/sumdb/note` and `tlog`) the tests check against.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Whether Go is installed; when it is not, fails under
/// `CHAINLOG_REQUIRE_GO` (scripts/test.sh sets it) and otherwise prints a
/// note that the outside-implementation check is skipped.
pub fn go_found() -> bool {
    let found = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CHAINLOG_REQUIRE_GO").is_none(),
            "Go is required (scripts/test.sh installs golang-go and golang-golang-x-mod-dev)"
        );
        eprintln!("note: Go not installed; skipping the outside-implementation check (run scripts/test.sh)");
    }
    found
}

/// The notecheck binary, built into the temporary directory under a name
/// with `tag` and the process id; `None` when Go is missing (see [`go_found`]).
pub fn notecheck(tag: &str) -> Option<PathBuf> {
    if !go_found() {
        return None;
    }
    let out = std::env::temp_dir().join(format!("chainlog-notecheck-{tag}-{}", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/go/notecheck/main.go"
        ))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .status()
        .unwrap();
    assert!(status.success(), "building tests/go/notecheck failed");
    Some(out)
}
