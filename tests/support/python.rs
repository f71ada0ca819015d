//! The project's Python venv (`.venv-tests`, made by
//! scripts/python-tools.sh) for the tests that run Python validators.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv's python, installing the pinned tools if needed; None (after
/// a loud note) when that fails and `require_var` is not set; a panic when
/// it is (scripts/test.sh sets it). `tools` names them for the messages.
pub fn venv_python(require_var: &str, tools: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/python-tools.sh")).output();
    match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            return Some(PathBuf::from(text.trim()));
        }
        Ok(out) => eprintln!(
            "scripts/python-tools.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("scripts/python-tools.sh could not run: {e}"),
    }
    if std::env::var_os(require_var).is_some() {
        panic!("{require_var} is set but {tools} could not be installed (scripts/python-tools.sh)");
    }
    eprintln!(
        "\n\n******************************************************************\n\
         NOTE: this test was SKIPPED: {tools} could not be installed.\n\
         Set {require_var}=1 to make this a failure.\n\
         ******************************************************************\n"
    );
    None
}
