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

/// Decodes an 8-bit RGB or RGBA PNG (as Chromium writes screenshots) to
/// `(width, height, rgb pixels)`.
#[allow(dead_code)] // not every test that includes this module reads pixels
pub fn decode_png(png: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    use std::io::Read;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (mut at, mut idat) = (8, Vec::new());
    let (mut width, mut height, mut channels) = (0, 0, 0);
    while at < png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        if kind == b"IHDR" {
            width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
            height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
            assert_eq!(data[8], 8, "8-bit depth");
            channels = match data[9] {
                2 => 3,
                6 => 4,
                other => panic!("colour type {other}"),
            };
        } else if kind == b"IDAT" {
            idat.extend_from_slice(data);
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = width * channels;
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        let row = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (filter, mut line) = (row[0], row[1..].to_vec());
        for i in 0..stride {
            let a = if i >= channels {
                line[i - channels] as i16
            } else {
                0
            };
            let b = prev[i] as i16;
            let c = if i >= channels {
                prev[i - channels] as i16
            } else {
                0
            };
            let add = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let pp = a + b - c;
                    let (pa, pb, pc) = ((pp - a).abs(), (pp - b).abs(), (pp - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                other => panic!("filter {other}"),
            };
            line[i] = line[i].wrapping_add(add as u8);
        }
        pixels.extend(line.chunks(channels).map(|px| [px[0], px[1], px[2]]));
        prev = line;
    }
    (width, height, pixels)
}
