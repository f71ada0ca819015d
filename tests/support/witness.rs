//! A `chainlog witness serve` process for the witness tests (the test
//! crate names tests/support/server.rs `support`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};

use crate::support::{chainlog, spawn_listening, terminate};

/// `chainlog witness serve` with key `key`, logs file `logs` and state
/// `state`, on a free loopback port.
pub fn serve_command(key: &Path, logs: &Path, state: &Path) -> Command {
    let mut command = chainlog();
    command
        .args(["witness", "serve", "--key"])
        .arg(key)
        .arg("--logs")
        .arg(logs)
        .arg("--state")
        .arg(state)
        .args(["--listen", "127.0.0.1:0"]);
    command
}

/// A running `chainlog witness serve`.
pub struct WitnessProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The listening address.
    pub addr: SocketAddr,
}

impl WitnessProcess {
    /// Starts a witness with key `key`, logs file `logs` and state `state`.
    pub fn start(key: &Path, logs: &Path, state: &Path) -> WitnessProcess {
        let command = serve_command(key, logs, state);
        let (child, first) = spawn_listening(command, &state.with_extension("stderr"));
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let addr = url.trim_start_matches("http://").parse().unwrap();
        WitnessProcess { child, url, addr }
    }

    /// Stops it with SIGTERM; it must exit cleanly.
    pub fn stop(mut self) {
        assert!(terminate(&mut self.child).success());
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `DIR/logs.json` following `origin` with the log key in
/// `DIR/log.pub`, and starts witnesses 1 to 3 of `DIR/wI.key` with their
/// state in `DIR/wI-state`.
pub fn start_three(dir: &Path, origin: &str) -> Vec<WitnessProcess> {
    let vkey = std::fs::read_to_string(dir.join("log.pub")).unwrap();
    let logs = serde_json::json!({"logs": [{"origin": origin, "keys": [vkey.trim()]}]});
    std::fs::write(dir.join("logs.json"), logs.to_string()).unwrap();
    (1..=3)
        .map(|i| {
            WitnessProcess::start(
                &dir.join(format!("w{i}.key")),
                &dir.join("logs.json"),
                &dir.join(format!("w{i}-state")),
            )
        })
        .collect()
}
