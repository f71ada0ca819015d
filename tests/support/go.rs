//! Builds `tests/go/notecheck`, the outside implementation (Go's
//! `golang.org/x/mod/sumdb/note` and `tlog`) the tests check against.

use std::path::PathBuf;
use std::process::Command;

/// The notecheck binary, built into the temporary directory under a name
/// with `tag` and the process id; `None` (with a note) when Go is missing
/// and `CHAINLOG_REQUIRE_GO` is unset (scripts/test.sh sets it).
pub fn notecheck(tag: &str) -> Option<PathBuf> {
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
