//! Outside tools the tests install through the project's scripts: the
//! Python venv (`.venv-tests`, scripts/python-tools.sh) and the syslog
//! receiver (scripts/syslog-server.sh).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `script ARGS` (relative to the repository) and returns what it
/// printed; None (after a loud note) when it fails and `require_var` is not
/// set; a panic when it is (scripts/test.sh sets it). `tools` names what
/// it installs, for the messages.
pub fn install(script: &str, args: &[&str], require_var: &str, tools: &str) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match Command::new(root.join(script)).args(args).output() {
        Ok(out) if out.status.success() => {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Ok(out) => eprintln!("{script} failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => eprintln!("{script} could not run: {e}"),
    }
    if std::env::var_os(require_var).is_some() {
        panic!("{require_var} is set but {tools} could not be installed ({script})");
    }
    eprintln!(
        "\n\n******************************************************************\n\
         NOTE: this test was SKIPPED: {tools} could not be installed.\n\
         Set {require_var}=1 to make this a failure.\n\
         ******************************************************************\n"
    );
    None
}

/// The venv's python, with the pinned tools installed (see [`install`]).
pub fn venv_python(require_var: &str, tools: &str) -> Option<PathBuf> {
    install("scripts/python-tools.sh", &[], require_var, tools).map(|out| PathBuf::from(out.trim()))
}
