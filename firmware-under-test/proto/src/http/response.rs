//! Responses as bytes.
//!
//! Every response closes its connection and allows any origin, as Mongoose OS's RPC channel
//! does (`Access-Control-Allow-Origin: *`), so a web page can call the device. [`Response::to_bytes`]
//! writes `Content-Length`, `Connection: close` and the CORS header itself; callers add only
//! their own headers.
//!
//! ```
//! use ota_proto::http::response::Response;
//!
//! let bytes = Response::text(200, "Update applied, finalizing\r\n").to_bytes();
//! assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"));
//! ```

use super::HttpError;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// What a server sends when a request carries `Expect: 100-continue`: curl waits a second for
/// it before sending a body over 1 MiB.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Headers that [`Response::to_bytes`] writes itself, so a caller must not add them.
const MANAGED_HEADERS: [&str; 4] =
    ["Content-Length", "Connection", "Access-Control-Allow-Origin", "Transfer-Encoding"];

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    /// Written in order, after the status line.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with the standard reason phrase for `status`.
    pub fn new(status: u16) -> Self {
        Response { status, reason: reason_phrase(status), headers: Vec::new(), body: Vec::new() }
    }

    /// A `text/plain` response. Mongoose OS ends its status messages with `\r\n`; pass it in
    /// `body` where the original does.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        let mut response = Response::new(status).with_header("Content-Type", "text/plain");
        response.body = body.into().into_bytes();
        response
    }

    /// A `text/html` response, as `/update/commit` and `/update/revert` answer.
    pub fn html(status: u16, body: impl Into<String>) -> Self {
        Response::text(status, body).with_header("Content-Type", "text/html")
    }

    /// An `application/json` response with `body` serialised compactly.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        let mut response = Response::new(status).with_header("Content-Type", "application/json");
        response.body = body.to_string().into_bytes();
        response
    }

    /// The answer to a CORS preflight (`OPTIONS`), as Mongoose OS's RPC channel gives it:
    /// `200`, any origin, any request header, no body.
    pub fn options() -> Self {
        Response::new(200)
            .with_header("Content-Type", "application/json")
            .with_header("Access-Control-Allow-Headers", "*")
    }

    /// The answer to a request the parser refused: its status, its message as `text/plain`.
    pub fn from_error(error: &HttpError) -> Self {
        Response::text(error.status, format!("{}\r\n", error.message))
    }

    /// Sets a header, replacing one of the same name (ignoring case). Panics on a header that
    /// [`Response::to_bytes`] writes itself, or on a line break in `name` or `value`: both are
    /// bugs in the caller.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        assert!(
            !MANAGED_HEADERS.iter().any(|m| m.eq_ignore_ascii_case(name)),
            "{name} is written by Response::to_bytes"
        );
        assert!(super::is_token(name), "bad header name {name:?}");
        assert!(!value.contains(['\r', '\n']), "line break in the value of header {name}: {value:?}");
        match self.headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(header) => *header = (name.to_string(), value.to_string()),
            None => self.headers.push((name.to_string(), value.to_string())),
        }
        self
    }

    /// The response as it goes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// The standard reason phrase for a status code, or `Unknown` for one this device never sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
