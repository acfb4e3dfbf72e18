//! The device's HTTP service (§6.1 and the HTTP part of §7 of the reference), one connection at
//! a time, without a socket: a [`Connection`] is fed the bytes its transport received and drives
//! the application; what it cannot do itself (a pull, a whole RPC frame, an RPC call, which need
//! the board's network or its RPC channel) it hands back as an [`Action`], and the board turns
//! the outcome into the response with [`pull_response`], [`call_response`] or [`frame_response`].
//! The virtual board (threads over `std::net`) and the bare-metal ports (smoltcp sockets) run
//! this one state machine, so their status codes and texts are the same by construction.
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
//! Every response closes its connection. A board bounds its connections itself and answers the
//! one past its bound with [`too_many_connections`].

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use ota_core::updater::UpdateOptions;
use ota_proto::http::HttpError;
use ota_proto::http::multipart::{UploadEvent, UploadForm};
use ota_proto::http::request::{RequestEvent, RequestHead, RequestParser};
use ota_proto::http::response::{CONTINUE_100, Response};
use serde_json::Value;

use crate::app::{App, Flash, RpcError, SessionId};
use crate::event::Source;
use crate::service::{PullRequest, UpdateRequest};

/// Largest body of `POST /rpc` and `/rpc/<Method>` (a frame, not a bundle).
pub const RPC_BODY_MAX_BYTES: usize = 64 * 1024;

/// The form fields and query keys an update takes, parsed by `ota-app`'s one parser.
const UPDATE_FIELDS: [&str; 3] = ["commit_timeout", "ignore_same_version", "url"];

/// The application as a board holds it: behind a lock on the virtual board, owned by the main
/// loop on a bare-metal port.
pub trait AppHost {
    type Flash: Flash;
    /// Runs `f` on the application at the board's time; an error when no firmware runs (hung,
    /// bricked), which the service answers as a refusal.
    fn with_app<T>(&mut self, f: impl FnOnce(&mut App<Self::Flash>, u64) -> T) -> Result<T, RpcError>;
}

/// What the request needs of the board once it has ended.
#[derive(Debug)]
pub enum Action {
    /// The answer; send it and close.
    Respond(Response),
    /// `/update?url=`: run the pull, then answer [`pull_response`] of its outcome.
    Pull(PullRequest),
    /// `POST /rpc`: handle the frame as the board's RPC channel does, then answer
    /// [`frame_response`].
    Frame(Vec<u8>),
    /// `/rpc/<Method>`: call the method (running the pull an `OTA.Update` asks for), then answer
    /// [`call_response`].
    Call { method: String, params: Value },
}

/// One HTTP connection: fed what the transport received, it answers once, then ignores the rest.
pub struct Connection {
    parser: RequestParser,
    route: Option<Route>,
    ended: bool,
}

impl Default for Connection {
    fn default() -> Self {
        Connection::new()
    }
}

impl Connection {
    pub fn new() -> Self {
        Connection { parser: RequestParser::new(), route: None, ended: false }
    }

    /// Whether the request has ended (an [`Action`] was given): the rest is not read.
    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Feeds bytes the transport received. `send` gets what must go out before the end (the
    /// `100 Continue` a client waits for). Returns the [`Action`] once the request ended or was
    /// refused.
    pub fn feed(
        &mut self,
        host: &mut impl AppHost,
        bytes: &[u8],
        mut send: impl FnMut(&[u8]),
    ) -> Option<Action> {
        if self.ended {
            return None;
        }
        let mut action = None;
        for event in self.parser.feed(bytes) {
            action = match event {
                Err(error) => {
                    if let Some(Route::Upload(upload)) = self.route.as_mut() {
                        upload.abort(host);
                    }
                    Some(Action::Respond(Response::from_error(&error)))
                }
                Ok(RequestEvent::Head(head)) => {
                    if head.expects_continue() {
                        send(CONTINUE_100);
                    }
                    self.route = Some(Route::new(host, &head));
                    None
                }
                Ok(RequestEvent::Body(piece)) => {
                    if let Some(r) = self.route.as_mut() {
                        r.body(host, piece);
                    }
                    None
                }
                Ok(RequestEvent::End) => self.route.take().map(|r| r.finish(host)),
            };
            if action.is_some() {
                break;
            }
        }
        if action.is_some() {
            self.ended = true;
            self.route = None;
        }
        action
    }

    /// The peer went away (or the transport failed) before the request ended: an upload it
    /// started is abandoned, and nothing else changes.
    pub fn closed(&mut self, host: &mut impl AppHost) {
        if let Some(Route::Upload(upload)) = self.route.take()
            && let Some(id) = upload.session
        {
            let why = "Update aborted: the upload was cut off";
            let _ = host.with_app(|app, now| app.update_abort(id, why, now));
        }
        self.ended = true;
    }
}

/// What a board answers a connection past its bound.
pub fn too_many_connections() -> Response {
    Response::text(503, "Too many connections\r\n")
}

/// The answer to `/update?url=` from the pull's outcome.
pub fn pull_response(outcome: Result<&str, RpcError>) -> Response {
    match outcome {
        Ok(message) => Response::text(200, format!("(1) {message}\r\n")),
        Err(e) => Response::text(500, format!("({}) {}\r\n", e.code, e.message)),
    }
}

/// The JSON an `OTA.Update` call answers with once its pull ended.
pub fn pull_result(outcome: Result<&str, RpcError>) -> Result<Value, RpcError> {
    outcome.map(|m| serde_json::json!({"state": 3, "msg": m}))
}

/// The answer to `/rpc/<Method>`: 200 and the result alone, or the error object with 403/404
/// from its code, 500 otherwise.
pub fn call_response(outcome: Result<Value, RpcError>) -> Response {
    match outcome {
        Ok(v) => Response::json(200, &v),
        Err(e) => {
            let status = match e.code {
                403 => 403,
                404 => 404,
                _ => 500,
            };
            Response::json(status, &serde_json::json!({"code": e.code, "message": e.message}))
        }
    }
}

/// The answer to `POST /rpc`: the reply frame, an empty 200 for a notification (no reply), or
/// 400 with the error frame the board made for a body that is not a request.
pub fn frame_response(reply: Result<Option<String>, String>) -> Response {
    match reply {
        Ok(Some(json)) => {
            let mut response = Response::new(200).with_header("Content-Type", "application/json");
            response.body = json.into_bytes();
            response
        }
        Ok(None) => Response::new(200),
        Err(error_frame) => {
            let mut response = Response::new(400).with_header("Content-Type", "application/json");
            response.body = error_frame.into_bytes();
            response
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
    fn new(host: &mut impl AppHost, head: &RequestHead) -> Route {
        if head.method == "OPTIONS" {
            return Route::Answer(Response::options());
        }
        let path = head.path.trim_end_matches('/');
        match path {
            "/update" => update_route(host, head),
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

    fn body(&mut self, host: &mut impl AppHost, piece: &[u8]) {
        match self {
            Route::Upload(upload) => upload.body(host, piece),
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

    fn finish(self, host: &mut impl AppHost) -> Action {
        let response = match self {
            Route::Answer(response) => response,
            Route::Upload(upload) => upload.finish(host),
            Route::Pull(request) => return Action::Pull(request),
            Route::Commit => ok_or_error(host.with_app(|app, now| app.commit(now)).and_then(|r| r)),
            Route::Revert => ok_or_error(host.with_app(|app, now| app.revert(now)).and_then(|r| r)),
            Route::Frame(body) => return Action::Frame(body),
            Route::Method { method, query, body } => {
                if body.iter().all(|b| b.is_ascii_whitespace()) {
                    return Action::Call { method, params: query };
                }
                match serde_json::from_slice::<Value>(&body) {
                    Ok(params) => return Action::Call { method, params },
                    Err(e) => Response::json(
                        400,
                        &serde_json::json!({"code": 400, "message": format!("bad request: {e}")}),
                    ),
                }
            }
        };
        Action::Respond(response)
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
        Err(_) => Response::text(400, "Error\r\n").with_header("Content-Type", "text/html"),
    }
}

fn update_route(host: &mut impl AppHost, head: &RequestHead) -> Route {
    let content_type = head.header("Content-Type").unwrap_or("");
    if head.method == "POST" && content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        let enabled = host.with_app(|app, _| app.config().update_enable_post).unwrap_or(true);
        if !enabled {
            return Route::Answer(Response::text(400, "POST updates are disabled.\r\n"));
        }
        return match UploadForm::new(content_type) {
            Ok(form) => Route::Upload(Box::new(Upload { form: Some(form), session: None, refused: None })),
            Err(e) => Route::Answer(Response::from_error(&e)),
        };
    }
    let Ok(config) = host.with_app(|app, _| app.config()) else {
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
    if host.with_app(|app, _| app.update_source().is_some()).unwrap_or(false) {
        return Route::Answer(Response::text(409, "Another update is in progress.\r\n"));
    }
    Route::Pull(PullRequest { url, commit_timeout_s, ignore_same_version })
}

impl Upload {
    fn body(&mut self, host: &mut impl AppHost, piece: &[u8]) {
        if self.refused.is_some() {
            return;
        }
        let Some(form) = self.form.as_mut() else { return };
        let (session, refused) = (&mut self.session, &mut self.refused);
        let result = form.feed(piece, |event| -> Result<(), HttpError> {
            match event {
                UploadEvent::BundleStart { .. } => {
                    let outcome = host.with_app(|app, now| {
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
                    if let Err(e) = host.with_app(|app, now| app.update_data(id, bytes, now)).and_then(|r| r)
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
            self.abort(host);
            self.refused = Some(Response::from_error(&e));
        }
    }

    fn abort(&mut self, host: &mut impl AppHost) {
        if let Some(id) = self.session.take() {
            let _ = host.with_app(|app, now| app.update_abort(id, "Update aborted", now));
        }
    }

    fn finish(mut self, host: &mut impl AppHost) -> Response {
        if let Some(response) = self.refused.take() {
            self.abort(host);
            return response;
        }
        let form = self.form.take().expect("an upload has its form until it finishes");
        if let Err(e) = form.finish() {
            self.abort(host);
            return Response::from_error(&e);
        }
        let Some(id) = self.session.take() else {
            return Response::text(400, "Update aborted: the form has no file part\r\n");
        };
        let fields = UPDATE_FIELDS.iter().filter_map(|&key| form.field(key).map(|value| (key, value)));
        let request = UpdateRequest::from_text(fields);
        let outcome = host.with_app(|app, now| {
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

fn refusal(e: RpcError) -> Response {
    Response::text(400, format!("{}\r\n", e.message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_core::flash::RamFlash;

    /// A board on which no firmware runs: every call on the application is refused.
    struct NoFirmware;

    impl AppHost for NoFirmware {
        type Flash = RamFlash<'static, 4, 4096>;
        fn with_app<T>(&mut self, _f: impl FnOnce(&mut App<Self::Flash>, u64) -> T) -> Result<T, RpcError> {
            Err(RpcError::new(-1, "no firmware runs"))
        }
    }

    fn feed_in_pieces(request: &[u8], piece: usize) -> Option<Action> {
        let mut connection = Connection::new();
        let mut action = None;
        for bytes in request.chunks(piece) {
            if let Some(a) = connection.feed(&mut NoFirmware, bytes, |_| {}) {
                action = Some(a);
            }
        }
        action
    }

    #[test]
    fn a_get_of_an_rpc_method_in_one_piece_or_many_ends_in_a_call() {
        let request = b"GET /rpc/Sys.GetInfo HTTP/1.1\r\nHost: 10.0.2.15\r\nAccept: */*\r\n\r\n";
        for piece in [request.len(), 7, 1] {
            let action = feed_in_pieces(request, piece);
            assert!(
                matches!(&action, Some(Action::Call { method, .. }) if method == "Sys.GetInfo"),
                "pieces of {piece}: {action:?}"
            );
        }
    }
}
