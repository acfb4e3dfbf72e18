//! The HTTP server on loopback (§6.1 and the HTTP part of §7 of the reference).
//!
//! The requests and their answers are `ota_app::web`'s, the same on every board; this is the
//! host port's part: the sockets, threads, and the pulls and RPC calls a request hands back.
//!
//! One thread per connection, at most [`CONNECTIONS_MAX`] at once (one more gets 503 "Too many
//! connections"); the body streams through, never held whole. When `accept` fails for want of
//! descriptors the acceptor waits for a connection to close rather than spin.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use ota_app::web::{self, Action, AppHost, Connection};
use serde_json::Value;

use super::{SharedDevice, lock};
use crate::app::{App, RpcError};
use crate::file_flash::FileFlash;
use crate::http::response::Response;
use crate::rpc::frame;
use crate::service::Reply;

/// Connections served at once; one more is answered 503 and closed.
pub const CONNECTIONS_MAX: usize = 32;

/// How long the acceptor waits for a connection to close after `accept` failed for want of a
/// file descriptor (or memory) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds `addr` and serves it in the background; returns the bound address.
pub fn start(device: SharedDevice, addr: &str) -> Result<String, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    std::thread::spawn(move || accept_loop(&device, &listener));
    Ok(bound)
}

/// Accepts connections for ever, each served on a thread of its own while it holds one of the
/// [`CONNECTIONS_MAX`] places; past them a connection gets 503 and is closed.
fn accept_loop(device: &SharedDevice, listener: &TcpListener) {
    let places = Arc::new(Places::default());
    let refusals = Arc::new(Places::default());
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::ConnectionAborted => {
                continue;
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: accepting again at once would fail again and
                // spin. The connection stays in the backlog; wait until one of ours closes (which
                // frees a descriptor) or a while, then try again.
                eprintln!("virtual-board: http: accept failed: {e}; waiting for a connection to close");
                places.wait_for_a_close(ACCEPT_BACKOFF);
                continue;
            }
        };
        let Some(place) = places.take() else {
            // Refusing takes a thread too (see `refuse`), from a pool of its own; past that the
            // connection is just closed.
            if let Some(refusal) = refusals.take() {
                std::thread::spawn(move || {
                    refuse(stream);
                    drop(refusal);
                });
            }
            continue;
        };
        let device = device.clone();
        std::thread::spawn(move || {
            let mut stream = stream;
            serve(&device, &mut stream);
            // The place is free before the peer sees the connection close.
            drop(place);
            drop(stream);
        });
    }
}

/// 503 to a connection past the cap. Closing a socket with unread input makes the kernel send
/// a reset, which can destroy the response before the client reads it, so the request is read
/// and dropped until the client closes (bounded in time and bytes).
fn refuse(mut stream: TcpStream) {
    const DRAIN_MAX_BYTES: usize = 64 * 1024;
    let timeout = Some(Duration::from_secs(1));
    let _ = stream.set_write_timeout(timeout).and_then(|()| stream.set_read_timeout(timeout));
    let response = web::too_many_connections();
    if stream.write_all(&response.to_bytes()).and_then(|()| stream.shutdown(Shutdown::Write)).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < DRAIN_MAX_BYTES {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// The count of connections being served, and a signal when one closes.
#[derive(Default)]
struct Places {
    taken: Mutex<usize>,
    freed: Condvar,
}

impl Places {
    /// A place for one more connection, or `None` when all [`CONNECTIONS_MAX`] are taken.
    fn take(self: &Arc<Self>) -> Option<Place> {
        let mut taken = lock(&self.taken);
        if *taken == CONNECTIONS_MAX {
            return None;
        }
        *taken += 1;
        Some(Place(self.clone()))
    }

    /// Returns when a connection closes, or after `timeout` (the descriptors may be held by
    /// someone else).
    fn wait_for_a_close(&self, timeout: Duration) {
        let taken = lock(&self.taken);
        let _ = self.freed.wait_timeout(taken, timeout);
    }
}

/// One connection's place; dropping it frees the place.
struct Place(Arc<Places>);

impl Drop for Place {
    fn drop(&mut self) {
        *lock(&self.0.taken) -= 1;
        self.0.freed.notify_all();
    }
}

/// The application behind the device's lock, taken for one call at a time, so that the device
/// answers RPC while a connection streams an upload.
struct Locked<'a>(&'a SharedDevice);

impl AppHost for Locked<'_> {
    type Flash = FileFlash;
    fn with_app<T>(&mut self, f: impl FnOnce(&mut App<FileFlash>, u64) -> T) -> Result<T, RpcError> {
        lock(self.0).with_app(f)
    }
}

fn serve(device: &SharedDevice, stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut connection = Connection::new();
    let mut host = Locked(device);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                connection.closed(&mut host);
                return;
            }
            Ok(n) => n,
        };
        let mut interim = Vec::new();
        let action = connection.feed(&mut host, &buf[..n], |bytes| interim.extend_from_slice(bytes));
        if !interim.is_empty() {
            let _ = stream.write_all(&interim);
        }
        if let Some(action) = action {
            let response = match action {
                Action::Respond(response) => response,
                Action::Pull(request) => web::pull_response(super::pull::run(device, &request)),
                Action::Frame(body) => frame(device, &body),
                Action::Call { method, params } => method_call(device, &method, &params),
            };
            let _ = stream.write_all(&response.to_bytes());
            return;
        }
    }
}

/// `POST /rpc`: the frame through the same path as the serial line; the reply may come later
/// (a pull). A body that is not a request (not JSON, nested too deep, two frames, a response) is
/// answered 400 with an error frame, not with the silence a notification gets.
fn frame(device: &SharedDevice, body: &[u8]) -> Response {
    let (tx, rx) = mpsc::channel();
    let handled = super::rpc::handle_frame(device, body, move |reply| {
        let _ = tx.send(reply);
    });
    if let Err(error) = handled {
        return web::frame_response(Err(frame::not_a_frame_json(&error, &super::rpc::device_id(device))));
    }
    // A notification drops the sender without a reply: nothing to say.
    web::frame_response(Ok(rx.recv().ok()))
}

/// `/rpc/<Method>`: the method through the device's RPC path, a pull run here.
fn method_call(device: &SharedDevice, method: &str, params: &Value) -> Response {
    let outcome = match super::rpc::call(device, method, params) {
        Reply::Pull(request) => web::pull_result(super::pull::run(device, &request)),
        Reply::Result(v) => Ok(v),
        Reply::Error(e) => Err(e),
    };
    web::call_response(outcome)
}
