//! The HTTP server on loopback (§6.1 and the HTTP part of §7 of the reference):
//!
//! | request                         | what it does | answers |
//! |---------------------------------|--------------|---------|
//! | `POST /update`, multipart       | the part with a filename is the bundle, streamed into the updater; a `commit_timeout` field before or after it | 200 `Update applied, finalizing`, 400 with the updater's message, 409 `Another update is in progress.` |
//! | `GET|POST /update?url=…`        | pull (`url` defaults to `update.url`; `commit_timeout`, `ignore_same_version` default 1) | 200 `(1) <msg>`, 500 `(<code>) <msg>`, 400 no URL, 409 busy |
//! | `/update/commit`, `/update/revert` | commit, or revert and reboot | 200 `Ok`, 400 `Error` |
//! | `POST /rpc`                     | a whole frame | the whole reply frame; 400 and an error frame for a body that is not a request |
//! | `POST|GET /rpc/<Method>`        | params from the body, or from query values (JSON literals) | 200 and the result; the error object with 403/404 from its code, 500 otherwise |
//! | `OPTIONS`                       | CORS preflight | 200 |
//!
//! One thread per connection, at most [`CONNECTIONS_MAX`] at once (one more gets 503 "Too many
//! connections"); the body streams through, never held whole. When `accept` fails for want of
//! descriptors the acceptor waits for a connection to close rather than spin.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use ota_core::updater::UpdateOptions;
use serde_json::Value;

use super::{SharedDevice, lock};
use crate::app::{RpcError, SessionId};
use crate::http::multipart::{UploadEvent, UploadForm};
use crate::http::request::{RequestEvent, RequestHead, RequestParser};
use crate::http::response::Response;
use crate::rpc::frame;
use crate::service::{PullRequest, Reply, UpdateRequest};
use ota_app::Source;

/// Largest body of `POST /rpc` and `/rpc/<Method>` (a frame, not a bundle).
const RPC_BODY_MAX_BYTES: usize = 64 * 1024;

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
    let response = Response::text(503, "Too many connections\r\n");
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

fn serve(device: &SharedDevice, stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut parser = RequestParser::new();
    let mut route: Option<Route> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                // The client went away mid-request: an upload it started is abandoned.
                if let Some(Route::Upload(upload)) = &route
                    && let Some(id) = upload.session
                {
                    let why = "Update aborted: the upload was cut off";
                    let _ = lock(device).with_app(|app, now| app.update_abort(id, why, now));
                }
                return;
            }
            Ok(n) => n,
        };
        for event in parser.feed(&buf[..n]) {
            let response = match event {
                Err(error) => Some(Response::from_error(&error)),
                Ok(RequestEvent::Head(head)) => {
                    if head.expects_continue() {
                        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    route = Some(Route::new(device, &head));
                    None
                }
                Ok(RequestEvent::Body(piece)) => {
                    if let Some(r) = route.as_mut() {
                        r.body(device, piece);
                    }
                    None
                }
                Ok(RequestEvent::End) => route.take().map(|r| r.finish(device)),
            };
            if let Some(response) = response {
                let _ = stream.write_all(&response.to_bytes());
                return;
            }
        }
    }
}

/// What a request is, decided from its head.
enum Route {
    Upload(Box<Upload>),
    Pull(PullRequest),
    /// Already answered from the head (a refusal, an unknown path).
    Answer(Response),
    Commit,
    Revert,
    /// `POST /rpc`: a whole frame in the body.
    Frame(Vec<u8>),
    /// `/rpc/<Method>`; params from the body when it has one.
    Method {
        method: String,
        query: Value,
        body: Vec<u8>,
    },
}

struct Upload {
    form: Option<UploadForm>,
    /// The update session this upload opened: its bytes go there and nowhere else.
    session: Option<SessionId>,
    /// The first thing that went wrong: the response to give at the end.
    refused: Option<Response>,
}

impl Route {
    fn new(device: &SharedDevice, head: &RequestHead) -> Route {
        if head.method == "OPTIONS" {
            return Route::Answer(Response::options());
        }
        let path = head.path.trim_end_matches('/');
        match path {
            "/update" => update_route(device, head),
            "/update/commit" => Route::Commit,
            "/update/revert" => Route::Revert,
            "/rpc" if head.method == "POST" => Route::Frame(Vec::new()),
            _ if path.starts_with("/rpc/") => {
                let query = head.query.iter().map(|(k, v)| (k.clone(), literal(v))).collect();
                Route::Method {
                    method: path["/rpc/".len()..].to_string(),
                    query: Value::Object(query),
                    body: Vec::new(),
                }
            }
            _ => Route::Answer(Response::text(404, format!("Not Found: {}\r\n", head.path))),
        }
    }

    fn body(&mut self, device: &SharedDevice, piece: &[u8]) {
        match self {
            Route::Upload(upload) => upload.body(device, piece),
            Route::Frame(body) | Route::Method { body, .. } => {
                if body.len() + piece.len() <= RPC_BODY_MAX_BYTES {
                    body.extend_from_slice(piece);
                } else {
                    *self = Route::Answer(Response::text(
                        413,
                        format!("An RPC body is at most {RPC_BODY_MAX_BYTES} bytes\r\n"),
                    ));
                }
            }
            _ => {}
        }
    }

    fn finish(self, device: &SharedDevice) -> Response {
        match self {
            Route::Answer(response) => response,
            Route::Upload(upload) => upload.finish(device),
            Route::Pull(request) => match super::pull::run(device, &request) {
                Ok(message) => Response::text(200, format!("(1) {message}\r\n")),
                Err(e) => Response::text(500, format!("({}) {}\r\n", e.code, e.message)),
            },
            Route::Commit => ok_or_error(lock(device).with_app(|app, now| app.commit(now)).and_then(|r| r)),
            Route::Revert => ok_or_error(lock(device).with_app(|app, now| app.revert(now)).and_then(|r| r)),
            Route::Frame(body) => frame(device, &body),
            Route::Method { method, query, body } => method_call(device, &method, query, &body),
        }
    }
}

/// A query value as JSON: values are JSON literals (`?commit_timeout=300`, `?url="http://…"`);
/// one that does not parse is taken as a string, as people type URLs bare.
fn literal(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn ok_or_error(result: Result<(), RpcError>) -> Response {
    match result {
        Ok(()) => Response::text(200, "Ok\r\n").with_header("Content-Type", "text/html"),
        Err(e) => {
            eprintln!("virtual-board: {e}");
            Response::text(400, "Error\r\n").with_header("Content-Type", "text/html")
        }
    }
}

fn update_route(device: &SharedDevice, head: &RequestHead) -> Route {
    let content_type = head.header("Content-Type").unwrap_or("");
    if head.method == "POST" && content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        let enabled = lock(device).with_app(|app, _| app.config().update_enable_post).unwrap_or(true);
        if !enabled {
            return Route::Answer(Response::text(400, "POST updates are disabled.\r\n"));
        }
        return match UploadForm::new(content_type) {
            Ok(form) => Route::Upload(Box::new(Upload { form: Some(form), session: None, refused: None })),
            Err(e) => Route::Answer(Response::from_error(&e)),
        };
    }
    let config = lock(device).with_app(|app, _| app.config());
    let Ok(config) = config else {
        return Route::Answer(Response::text(500, "(-1) the device is not running\r\n"));
    };
    let fields = UPDATE_FIELDS.iter().filter_map(|&key| head.query_param(key).map(|value| (key, value)));
    let request = match UpdateRequest::from_text(fields) {
        Ok(request) => request,
        Err(e) => return Route::Answer(Response::text(400, format!("{}\r\n", e.message))),
    };
    let Some(url) = request.url.clone().or(config.update_url).filter(|u| !u.is_empty()) else {
        return Route::Answer(Response::text(400, "Update URL not specified and none is configured.\r\n"));
    };
    // A pull by URL skips the running version unless told otherwise (§6.1).
    let options = request.options(config.update_commit_timeout_s, true);
    let (commit_timeout_s, ignore_same_version) = (options.commit_timeout_s, options.ignore_same_version);
    if lock(device).with_app(|app, _| app.update_source().is_some()).unwrap_or(false) {
        return Route::Answer(Response::text(409, "Another update is in progress.\r\n"));
    }
    Route::Pull(PullRequest { url, commit_timeout_s, ignore_same_version })
}

impl Upload {
    fn body(&mut self, device: &SharedDevice, piece: &[u8]) {
        if self.refused.is_some() {
            return;
        }
        let Some(form) = self.form.as_mut() else { return };
        let (session, refused) = (&mut self.session, &mut self.refused);
        let result = form.feed(piece, |event| -> Result<(), crate::http::HttpError> {
            match event {
                UploadEvent::BundleStart { .. } => {
                    let mut d = lock(device);
                    let outcome = d.with_app(|app, now| {
                        if app.update_source().is_some() {
                            return Err(Response::text(409, "Another update is in progress.\r\n"));
                        }
                        let commit_timeout_s = app.config().update_commit_timeout_s;
                        let options = UpdateOptions { commit_timeout_s, ignore_same_version: false };
                        app.update_begin(Source::Push, options, None, None, now).map_err(refusal)
                    });
                    match outcome.map_err(refusal).and_then(|r| r) {
                        Ok(id) => *session = Some(id),
                        Err(response) => *refused = Some(response),
                    }
                }
                UploadEvent::BundleData(bytes) if refused.is_none() => {
                    let Some(id) = *session else { return Ok(()) };
                    if let Err(e) =
                        lock(device).with_app(|app, now| app.update_data(id, bytes, now)).and_then(|r| r)
                    {
                        *session = None;
                        *refused = Some(refusal(e));
                    }
                }
                _ => {}
            }
            Ok(())
        });
        if let Err(e) = result {
            self.abort(device);
            self.refused = Some(Response::from_error(&e));
        }
    }

    fn abort(&mut self, device: &SharedDevice) {
        if let Some(id) = self.session.take() {
            let _ = lock(device).with_app(|app, now| app.update_abort(id, "Update aborted", now));
        }
    }

    fn finish(mut self, device: &SharedDevice) -> Response {
        if let Some(response) = self.refused.take() {
            self.abort(device);
            return response;
        }
        let form = self.form.take().expect("an upload has its form until it finishes");
        if let Err(e) = form.finish() {
            self.abort(device);
            return Response::from_error(&e);
        }
        let Some(id) = self.session.take() else {
            return Response::text(400, "Update aborted: the form has no file part\r\n");
        };
        let fields = UPDATE_FIELDS.iter().filter_map(|&key| form.field(key).map(|value| (key, value)));
        let request = UpdateRequest::from_text(fields);
        let mut d = lock(device);
        let outcome = d.with_app(|app, now| {
            // Options may come after the file: they apply when the session ends.
            let request = match request {
                Ok(request) => request,
                Err(e) => {
                    app.update_abort(id, "Update aborted", now);
                    return Err(e);
                }
            };
            if let Some(s) = request.commit_timeout_s {
                app.update_set_commit_timeout(id, s)?;
            }
            if let Some(ignore) = request.ignore_same_version {
                app.update_set_ignore_same_version(id, ignore)?;
            }
            app.update_end(id, now)
        });
        match outcome.and_then(|r| r) {
            Ok(finished) => Response::text(200, format!("{}\r\n", finished.message())),
            Err(e) => refusal(e),
        }
    }
}

/// The form fields and query keys an update takes, parsed by `ota-app`'s one parser.
const UPDATE_FIELDS: [&str; 3] = ["commit_timeout", "ignore_same_version", "url"];

fn refusal(e: RpcError) -> Response {
    Response::text(400, format!("{}\r\n", e.message))
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
        let mut response = Response::new(400).with_header("Content-Type", "application/json");
        response.body = frame::not_a_frame_json(&error, &super::rpc::device_id(device)).into_bytes();
        return response;
    }
    match rx.recv() {
        Ok(reply) => {
            let mut response = Response::new(200).with_header("Content-Type", "application/json");
            response.body = reply.into_bytes();
            response
        }
        // A notification: nothing to say.
        Err(_) => Response::new(200),
    }
}

/// `/rpc/<Method>`: 200 and the result alone, or the error object with its status.
fn method_call(device: &SharedDevice, method: &str, query: Value, body: &[u8]) -> Response {
    let params = if body.iter().all(|b| b.is_ascii_whitespace()) {
        query
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => v,
            Err(e) => {
                return Response::json(
                    400,
                    &serde_json::json!({"code": 400, "message": format!("bad request: {e}")}),
                );
            }
        }
    };
    let reply = match super::rpc::call(device, method, &params) {
        Reply::Pull(request) => {
            super::pull::run(device, &request).map(|m| serde_json::json!({"state": 3, "msg": m})).into()
        }
        other => other,
    };
    match reply {
        Reply::Result(v) => Response::json(200, &v),
        Reply::Error(e) => {
            let status = match e.code {
                403 => 403,
                404 => 404,
                _ => 500,
            };
            Response::json(status, &serde_json::json!({"code": e.code, "message": e.message}))
        }
        Reply::Pull(_) => unreachable!("a pull was run above"),
    }
}
