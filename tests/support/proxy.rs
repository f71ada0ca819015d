//! An HTTP/1.1 proxy between chainlog and an S3 server, for the tests that
//! need the path to the bucket to misbehave:
//!
//! - [`Mode::Pass`] forwards every request (and counts them by kind, for
//!   the PUTs-per-second figure);
//! - [`Mode::Refuse`] cuts every open connection and closes each new one as
//!   soon as it is accepted: the bucket is unreachable (an outage, or a
//!   partition between a node and the bucket);
//! - [`Proxy::stripping`] forwards requests without their `Authorization`,
//!   `If-Match` and `If-None-Match` headers: a server that ignores the
//!   conditions (on a bucket anyone may write, since the signature goes too).
//!
//! Requests must carry a `Content-Length` (object_store's do); answers are
//! copied back as they are.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Pass,
    /// Cut open connections, close new ones unread.
    Refuse,
}

struct State {
    upstream: u16,
    mode: Mutex<Mode>,
    stripped: &'static [&'static str],
    /// Requests forwarded, by kind (`PUT`, `GET`, `LIST`, `HEAD`, …).
    counts: Mutex<BTreeMap<String, u64>>,
    /// Both sockets of each open connection, to cut them.
    open: Mutex<BTreeMap<u64, (TcpStream, TcpStream)>>,
    next_id: AtomicU64,
}

/// A running proxy (its threads live as long as the test process).
pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:upstream` that forwards everything.
    pub fn start(upstream: u16) -> Proxy {
        Proxy::with_stripped(upstream, &[])
    }

    /// A proxy that drops `Authorization`, `If-Match` and `If-None-Match`.
    pub fn stripping(upstream: u16) -> Proxy {
        Proxy::with_stripped(upstream, &["authorization", "if-match", "if-none-match"])
    }

    fn with_stripped(upstream: u16, stripped: &'static [&'static str]) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream,
            mode: Mutex::new(Mode::Pass),
            stripped,
            counts: Mutex::new(BTreeMap::new()),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        });
        let accepting = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                accept(&accepting, client);
            }
        });
        Proxy { port, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the mode; [`Mode::Refuse`] also cuts every open connection,
    /// so requests in flight fail now.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
        if mode == Mode::Refuse {
            let open = std::mem::take(&mut *self.state.open.lock().unwrap());
            for (client, server) in open.values() {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            }
        }
    }

    /// Requests forwarded so far, by kind.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state.counts.lock().unwrap().clone()
    }
}

fn accept(state: &Arc<State>, client: TcpStream) {
    if *state.mode.lock().unwrap() == Mode::Refuse {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, state.upstream)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    state.open.lock().unwrap().insert(
        id,
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
    );
    let (mut answers, mut back) = (server.try_clone().unwrap(), client.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut answers, &mut back);
        let _ = back.shutdown(Shutdown::Write);
    });
    let state = state.clone();
    std::thread::spawn(move || {
        forward_requests(&state, client, server);
        state.open.lock().unwrap().remove(&id);
    });
}

/// Copies requests from `client` to `server`, dropping the stripped
/// headers and counting each request.
fn forward_requests(state: &State, client: TcpStream, mut server: TcpStream) {
    let mut reader = BufReader::new(client);
    loop {
        let mut head = String::new();
        let mut content_length = 0usize;
        let mut request_line = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = server.shutdown(Shutdown::Write);
                    return;
                }
                Ok(_) => {}
            }
            if request_line.is_empty() {
                request_line = line.clone();
            }
            let name = line
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if name == "content-length" {
                content_length = line.split(':').nth(1).unwrap().trim().parse().unwrap();
            }
            assert!(
                name != "transfer-encoding",
                "chunked requests are not proxied"
            );
            if !state.stripped.contains(&name.as_str()) {
                head.push_str(&line);
            }
            if line == "\r\n" {
                break;
            }
        }
        *state
            .counts
            .lock()
            .unwrap()
            .entry(request_kind(&request_line))
            .or_default() += 1;
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err()
            || server.write_all(head.as_bytes()).is_err()
            || server.write_all(&body).is_err()
        {
            return;
        }
    }
}

/// `PUT`, `GET`, `HEAD`, `DELETE`, `POST`, or `LIST` for a GET of a bucket
/// listing (`?list-type=2`).
fn request_kind(request_line: &str) -> String {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("");
    if method == "GET" && target.contains("list-type=") {
        "LIST".into()
    } else {
        method
    }
}
