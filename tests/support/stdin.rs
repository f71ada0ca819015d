//! Running a program with some input on its stdin.

use std::io::{ErrorKind, Write};
use std::process::{Command, Output, Stdio};

/// Runs `command` with `input` on its stdin and collects its output. The
/// input is fed from another thread, so a program that writes a lot before
/// reading all of it cannot block the test, and one that exits without
/// reading it (a refused writer) is no failure here: its status says.
pub fn output_with_stdin(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || match stdin.write_all(&input) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => panic!("feeding stdin: {e}"),
        _ => {}
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}
