//! Debian's headless Chromium and chromedriver for the browser tests,
//! installed with apt-get when missing. When that fails a test is skipped
//! with a loud note, unless CHAINLOG_REQUIRE_BROWSER is set (scripts/test.sh
//! sets it), in which case it fails.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn browser_installed() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// Installs chromium and chromium-driver if missing. False (after a loud
/// note naming `test`) when that fails and the browser is not required.
pub fn ensure_browser(test: &str) -> bool {
    if browser_installed() {
        return true;
    }
    eprintln!("{test}: installing chromium and chromium-driver with apt-get …");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        install();
    }
    if browser_installed() {
        return true;
    }
    if std::env::var_os("CHAINLOG_REQUIRE_BROWSER").is_some() {
        panic!("CHAINLOG_REQUIRE_BROWSER is set but chromium and chromium-driver could not be installed");
    }
    eprintln!(
        "\n\n******************************************************************\n\
         NOTE: the {test} browser test was SKIPPED: chromium and\n\
         chromium-driver are missing and apt-get could not install them.\n\
         Set CHAINLOG_REQUIRE_BROWSER=1 to make this a failure.\n\
         ******************************************************************\n"
    );
    false
}
