//! The runner's RPC client: Mongoose OS RPC over a serial line or HTTP, as `mos call` speaks it,
//! and the `OTA.Begin`/`OTA.Write`/`OTA.End` push of `mos ota`.
//!
//! | port                      | how a call goes |
//! |---------------------------|-----------------|
//! | `/dev/ttyUSB0`, `/dev/pts/N` | one frame per line with its CRC-32 (`ota_proto::rpc::uart`), replies matched by `id`; console lines and other junk on the line are skipped |
//! | `http://HOST:PORT/rpc`    | `POST` of the whole frame; the body of the answer is the reply frame |
//! | `mqtt://HOST:PORT/DEVICE_ID` | publish to `DEVICE_ID/rpc` with `src` `DEVICE_ID/rpc-resp/<client id>`, the reply read from `<src>/rpc` (`crate::mqtt_client`) |
//!
//! [`Client::call`] separates the two ways a call can fail: the device answered with an error
//! (`Ok(Err(RpcErr))`, data a caller may expect), or no answer came at all
//! (`Err(TransportError)`: a port that will not open, a timeout, a board that powered off — a pty
//! whose other side closed reads EIO or hangs up).

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ota_proto::rpc::frame::{self, Id, Outcome, Request};
use ota_proto::rpc::uart::{Decoder, Item, Style, encode};
use serde_json::{Value, json};
use serialport::SerialPort as _;

/// How long a call waits for its reply unless told otherwise (`mos --timeout` is 20 s).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Console lines kept for [`Client::take_console`]; older ones are dropped.
const CONSOLE_LINES_MAX: usize = 1000;
/// The most of one console line kept.
const LINE_BYTES_MAX: usize = 16 * 1024;
/// Bytes read from the serial port at once.
const READ_BYTES: usize = 4096;

/// An error the device answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcErr {
    pub code: i64,
    pub message: String,
}

impl fmt::Display for RpcErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

/// No answer came: the call may or may not have reached the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The port could not be opened.
    Open { port: String, reason: String },
    /// The other side of the line is gone: the board powered off (or its process died).
    Closed { port: String },
    /// Nothing accepted the connection: a wrong address or port, not a board that went away.
    Refused { port: String, reason: String },
    /// No reply to `method` within `waited`.
    Timeout { port: String, method: String, waited: Duration },
    /// Reading or writing failed otherwise.
    Io { port: String, reason: String },
    /// Something answered, but not with a reply frame.
    BadReply { port: String, detail: String },
}

impl TransportError {
    /// What the user can do about it.
    pub fn help(&self) -> &'static str {
        match self {
            TransportError::Open { .. } => {
                "check the port: a serial device path (/dev/ttyUSB0, /dev/pts/N), http://HOST:PORT/rpc or mqtt://HOST:PORT/DEVICE_ID, and that nothing else holds it"
            }
            TransportError::Closed { .. } => {
                "the device went away (powered off, unplugged, or its process ended); power it on and try again"
            }
            TransportError::Refused { .. } => {
                "nothing listens there: check the address and port (the board prints its `http=` line at start)"
            }
            TransportError::Timeout { .. } => {
                "the device did not answer: check that it runs and that the port is its RPC channel"
            }
            TransportError::Io { .. } => "check the connection to the device",
            TransportError::BadReply { .. } => "check that the port leads to a Mongoose OS RPC channel",
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Open { port, reason } => write!(f, "cannot open {port}: {reason}"),
            TransportError::Closed { port } => write!(f, "{port}: the other side closed (the board is off)"),
            TransportError::Refused { port, reason } => write!(f, "cannot connect to {port}: {reason}"),
            TransportError::Timeout { port, method, waited } => {
                write!(f, "{port}: no reply to {method} within {:.1} s", waited.as_secs_f64())
            }
            TransportError::Io { port, reason } => write!(f, "{port}: {reason}"),
            TransportError::BadReply { port, detail } => write!(f, "{port}: not an RPC reply: {detail}"),
        }
    }
}

impl std::error::Error for TransportError {}

pub type CallResult = Result<Result<Value, RpcErr>, TransportError>;

/// An RPC channel to one device.
pub enum Client {
    Serial(SerialClient),
    Http(HttpClient),
    Mqtt(crate::mqtt_client::MqttClient),
}

impl Client {
    /// Opens `port`: an `http://` URL (`/rpc` is added when it has no path), an
    /// `mqtt://HOST:PORT/DEVICE_ID`, else a serial device path.
    pub fn open(port: &str) -> Result<Client, TransportError> {
        if port.starts_with("mqtt://") {
            crate::mqtt_client::MqttClient::open(port).map(Client::Mqtt)
        } else if port.starts_with("http://") || port.starts_with("https://") {
            HttpClient::open(port).map(Client::Http)
        } else {
            SerialClient::open(port).map(Client::Serial)
        }
    }

    /// The port, as given.
    pub fn port(&self) -> &str {
        match self {
            Client::Serial(c) => &c.port,
            Client::Http(c) => &c.url,
            Client::Mqtt(c) => &c.port,
        }
    }

    /// Calls `method` and waits up to [`CALL_TIMEOUT`] for its reply.
    pub fn call(&mut self, method: &str, params: Value) -> CallResult {
        self.call_timeout(method, params, CALL_TIMEOUT)
    }

    pub fn call_timeout(&mut self, method: &str, params: Value, timeout: Duration) -> CallResult {
        match self {
            Client::Serial(c) => c.call(method, params, timeout),
            Client::Http(c) => c.call(method, params, timeout),
            Client::Mqtt(c) => c.call(method, params, timeout),
        }
    }

    /// Console lines seen on a serial line since the last call (none over HTTP).
    pub fn take_console(&mut self) -> Vec<String> {
        match self {
            Client::Serial(c) => std::mem::take(&mut c.console),
            Client::Http(_) | Client::Mqtt(_) => Vec::new(),
        }
    }
}

/// RPC over a serial line (a real UART or the virtual board's pty).
pub struct SerialClient {
    port: String,
    tty: serialport::TTYPort,
    decoder: Decoder,
    next_id: u64,
    console: Vec<String>,
    /// The line being read, for the console (its first [`LINE_BYTES_MAX`] bytes).
    line: Vec<u8>,
    /// The line being read carried a response.
    line_answered: bool,
    /// Nothing sent yet.
    fresh: bool,
}

impl SerialClient {
    pub fn open(port: &str) -> Result<SerialClient, TransportError> {
        let tty = serialport::new(port, 115_200)
            .timeout(Duration::from_millis(100))
            .open_native()
            .map_err(|e| TransportError::Open { port: port.into(), reason: e.to_string() })?;
        Ok(SerialClient {
            port: port.into(),
            tty,
            decoder: Decoder::default(),
            next_id: first_id(),
            console: Vec::new(),
            line: Vec::new(),
            line_answered: false,
            fresh: true,
        })
    }

    pub fn call(&mut self, method: &str, params: Value, timeout: Duration) -> CallResult {
        let id = self.send(method, params)?;
        self.await_reply(id, method, timeout)
    }

    /// Sends a request without waiting for its reply; its id.
    pub fn send(&mut self, method: &str, params: Value) -> Result<u64, TransportError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request::new(id, method, params);
        // A newline before the first frame ends whatever an earlier, interrupted writer left on
        // the line (the device answers it with an empty line, which the decoder skips).
        let mut bytes = if self.fresh { b"\n".to_vec() } else { Vec::new() };
        self.fresh = false;
        bytes.extend(encode(request.to_json().as_bytes(), Style::LINE_CRC));
        self.write_all(&bytes)?;
        Ok(id)
    }

    /// Reads the line until the reply to request `id` comes, for at most `timeout`.
    pub fn await_reply(&mut self, id: u64, method: &str, timeout: Duration) -> CallResult {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; READ_BYTES];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TransportError::Timeout {
                    port: self.port.clone(),
                    method: method.into(),
                    waited: timeout,
                });
            }
            let n = self.read(&mut buf, left)?;
            if let Some(reply) = self.take_reply(&buf[..n], &Id::from(id))? {
                return Ok(reply);
            }
        }
    }

    /// Decodes `bytes`; the reply with `id`, if it came. Replies to other ids (a call that timed
    /// out earlier) are skipped; every other line is kept whole as a console line, frames that
    /// are no response included (`@ota {json}` event lines share the line with RPC on a UART).
    fn take_reply(&mut self, bytes: &[u8], id: &Id) -> Result<Option<Result<Value, RpcErr>>, TransportError> {
        let mut reply = None;
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            if self.line.len() + piece.len() <= LINE_BYTES_MAX {
                self.line.extend_from_slice(piece);
            }
            let mut frames = Vec::new();
            self.decoder.feed(piece, |item| {
                if let Item::Frame { json, .. } = item {
                    frames.push(json);
                }
            });
            for json in frames {
                // A frame that is not a response (an event line, a request echoed) is console.
                let Ok(response) = frame::parse_response(&json) else { continue };
                self.line_answered = true;
                if response.id == *id {
                    reply = Some(outcome(response.outcome));
                }
            }
            if piece.ends_with(b"\n") {
                self.end_line();
            }
        }
        Ok(reply)
    }

    /// A whole line read: console text unless it carried a response.
    fn end_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line).trim_end().to_string();
        if !self.line_answered && !text.trim().is_empty() {
            if self.console.len() == CONSOLE_LINES_MAX {
                self.console.remove(0);
            }
            self.console.push(text);
        }
        self.line.clear();
        self.line_answered = false;
    }

    fn read(&mut self, buf: &mut [u8], left: Duration) -> Result<usize, TransportError> {
        self.tty.set_timeout(left.min(Duration::from_millis(200))).map_err(|e| self.io(e.to_string()))?;
        match self.tty.read(buf) {
            Ok(0) => Err(TransportError::Closed { port: self.port.clone() }),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::Interrupted => Ok(0),
            Err(e) if is_closed(&e) => Err(TransportError::Closed { port: self.port.clone() }),
            Err(e) => Err(self.io(e.to_string())),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.tty.set_timeout(Duration::from_secs(5)).map_err(|e| self.io(e.to_string()))?;
        match self.tty.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) if is_closed(&e) => Err(TransportError::Closed { port: self.port.clone() }),
            Err(e) => Err(self.io(format!("write: {e}"))),
        }
    }

    fn io(&self, reason: String) -> TransportError {
        TransportError::Io { port: self.port.clone(), reason }
    }
}

/// A pty whose other side closed reads EIO, and `poll` says it hung up (serialport maps that to
/// a broken pipe).
fn is_closed(e: &std::io::Error) -> bool {
    const EIO: i32 = 5;
    matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset)
        || e.raw_os_error() == Some(EIO)
        || e.to_string().contains("I/O error")
}

/// Ids start at a value that differs from process to process, so that a late reply to an
/// earlier client on the same line is not taken for this one's.
pub(crate) fn first_id() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    u64::from(std::process::id() % 1000) * 1_000_000 + u64::from(nanos % 1_000_000) + 1
}

pub(crate) fn outcome(outcome: Outcome) -> Result<Value, RpcErr> {
    match outcome {
        Outcome::Result(value) => Ok(value),
        Outcome::Error(e) => Err(RpcErr { code: e.code, message: e.message.unwrap_or_default() }),
    }
}

/// RPC over HTTP: `POST /rpc` with a whole frame.
pub struct HttpClient {
    url: String,
    http: reqwest::blocking::Client,
    next_id: u64,
}

impl HttpClient {
    pub fn open(url: &str) -> Result<HttpClient, TransportError> {
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        let path = rest.find('/').map_or("", |at| &rest[at..]);
        let url = if path.is_empty() || path == "/" {
            format!("{}/rpc", url.trim_end_matches('/'))
        } else {
            url.to_string()
        };
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| TransportError::Open { port: url.clone(), reason: e.to_string() })?;
        Ok(HttpClient { url, http, next_id: first_id() })
    }

    pub fn call(&mut self, method: &str, params: Value, timeout: Duration) -> CallResult {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request::new(id, method, params);
        let response =
            self.http.post(&self.url).timeout(timeout).body(request.to_json()).send().map_err(|e| {
                if e.is_timeout() {
                    TransportError::Timeout { port: self.url.clone(), method: method.into(), waited: timeout }
                } else if e.is_connect() {
                    let mut reason = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(cause) = source {
                        reason = format!("{reason}: {cause}");
                        source = cause.source();
                    }
                    TransportError::Refused { port: self.url.clone(), reason }
                } else {
                    TransportError::Io { port: self.url.clone(), reason: e.to_string() }
                }
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .map_err(|e| TransportError::Io { port: self.url.clone(), reason: e.to_string() })?;
        match frame::parse_response(&body) {
            Ok(reply) if reply.id == Id::from(id) => Ok(outcome(reply.outcome)),
            Ok(reply) => Err(self.bad(format!("the reply has id {}, the request {id}", reply.id))),
            Err(e) => Err(self.bad(format!("HTTP {status}: {e}: {}", String::from_utf8_lossy(&body).trim()))),
        }
    }

    fn bad(&self, detail: String) -> TransportError {
        TransportError::BadReply { port: self.url.clone(), detail }
    }
}

/// A push as `mos ota` makes it: `OTA.Status`, `OTA.Begin`, `OTA.Write`s, `OTA.End`.
#[derive(Clone, Debug)]
pub struct OtaPush<'a> {
    pub bundle: &'a [u8],
    pub commit_timeout_s: u32,
    /// `OTA.Begin {timeout}`: how long the device waits for the next write (mos: 600 s).
    pub update_timeout_s: u32,
    /// Raw bytes per `OTA.Write` (mos: 512).
    pub chunk_bytes: usize,
    /// Asks the device to answer "Version is the same as current" for the version it runs.
    pub ignore_same_version: bool,
    /// Stops after this many bytes have been acknowledged, without `OTA.End` (a power cut
    /// follows).
    pub stop_after_bytes: Option<usize>,
}

/// Attempts per `OTA.Write`, as `mos ota` makes them, all at the same offset.
pub const WRITE_ATTEMPTS: usize = 3;

/// How a push ended, when the device answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtaOutcome {
    /// `OTA.End` answered with this message ("Update applied, finalizing", "Version is the same
    /// as current").
    Ended { message: String },
    /// `OTA.Status` says an update is already in progress (its state).
    Busy { state: i64 },
    /// The device refused `step` with `error`; after a refused write the update was aborted
    /// with `OTA.End`.
    Refused { step: String, error: RpcErr },
    /// `stop_after_bytes` were acknowledged.
    Stopped { sent_bytes: usize },
}

/// Pushes `push.bundle` over `client`; `progress` hears the bytes acknowledged so far.
pub fn ota_push(
    client: &mut Client,
    push: &OtaPush<'_>,
    progress: &mut dyn FnMut(usize),
) -> Result<OtaOutcome, TransportError> {
    assert!(push.chunk_bytes > 0, "a push needs a chunk size");
    if let Ok(status) = client.call("OTA.Status", Value::Null)? {
        let state = status.get("state").and_then(Value::as_i64).unwrap_or(0);
        if state != 0 && state != 2 {
            return Ok(OtaOutcome::Busy { state });
        }
    }
    let mut begin = json!({
        "timeout": push.update_timeout_s,
        "commit_timeout": push.commit_timeout_s,
        "size": push.bundle.len(),
    });
    if push.ignore_same_version {
        begin["ignore_same_version"] = json!(true);
    }
    if let Err(error) = client.call("OTA.Begin", begin)? {
        return Ok(OtaOutcome::Refused { step: "OTA.Begin".into(), error });
    }
    let end = push.stop_after_bytes.unwrap_or(usize::MAX).min(push.bundle.len());
    let mut offset = 0;
    while offset < end {
        let chunk = &push.bundle[offset..(offset + push.chunk_bytes).min(end)];
        if let Err(error) = write_chunk(client, offset, chunk)? {
            // As mos: abort the update with OTA.End, and report the first refusal.
            let _ = client.call("OTA.End", Value::Null)?;
            return Ok(OtaOutcome::Refused { step: format!("OTA.Write at offset {offset}"), error });
        }
        offset += chunk.len();
        progress(offset);
    }
    if push.stop_after_bytes.is_some_and(|stop| stop < push.bundle.len()) {
        return Ok(OtaOutcome::Stopped { sent_bytes: offset });
    }
    match client.call("OTA.End", Value::Null)? {
        Ok(result) => {
            let message = result.get("msg").and_then(Value::as_str).unwrap_or("Update applied, finalizing");
            Ok(OtaOutcome::Ended { message: message.to_string() })
        }
        Err(error) => Ok(OtaOutcome::Refused { step: "OTA.End".into(), error }),
    }
}

/// One `OTA.Write`, tried up to [`WRITE_ATTEMPTS`] times at the same offset; the first refusal
/// when every attempt failed. A timeout counts as a failed attempt; a closed line ends the push.
fn write_chunk(
    client: &mut Client,
    offset: usize,
    chunk: &[u8],
) -> Result<Result<(), RpcErr>, TransportError> {
    let params = json!({ "offset": offset, "data": base64::engine::general_purpose::STANDARD.encode(chunk) });
    let mut first: Option<RpcErr> = None;
    let mut timeout = None;
    for _ in 0..WRITE_ATTEMPTS {
        match client.call("OTA.Write", params.clone()) {
            Ok(Ok(_)) => return Ok(Ok(())),
            Ok(Err(e)) => {
                first.get_or_insert(e);
            }
            Err(e @ TransportError::Timeout { .. }) => timeout = Some(e),
            Err(e) => return Err(e),
        }
    }
    match (first, timeout) {
        (Some(e), _) => Ok(Err(e)),
        (None, Some(e)) => Err(e),
        (None, None) => unreachable!("WRITE_ATTEMPTS is at least one"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_port_without_a_path_gets_rpc() {
        let url = |port: &str| HttpClient::open(port).unwrap().url;
        assert_eq!(url("http://127.0.0.1:8080"), "http://127.0.0.1:8080/rpc");
        assert_eq!(url("http://127.0.0.1:8080/"), "http://127.0.0.1:8080/rpc");
        assert_eq!(url("http://127.0.0.1:8080/rpc"), "http://127.0.0.1:8080/rpc");
        assert_eq!(url("http://127.0.0.1:8080/rpc/"), "http://127.0.0.1:8080/rpc/");
    }

    /// A client on one end of a pty pair whose other end is closed; its next id is 7.
    fn client_on_a_pty() -> SerialClient {
        let (a, b) = serialport::TTYPort::pair().expect("a pty pair");
        drop(b);
        SerialClient {
            port: "test".into(),
            tty: a,
            decoder: Decoder::default(),
            next_id: 7,
            console: Vec::new(),
            line: Vec::new(),
            line_answered: false,
            fresh: false,
        }
    }

    #[test]
    fn a_serial_reply_is_found_among_console_lines_and_stale_replies() {
        let mut client = client_on_a_pty();
        let stale = encode(br#"{"id":6,"src":"d","result":1}"#, Style::LINE_CRC);
        let reply = encode(br#"{"id":7,"src":"d","error":{"code":-1,"message":"no"}}"#, Style::QUOTED_CRC);
        let mut wire = b"[   12 ms] boot slot 0 (Committed)\r\n".to_vec();
        wire.extend(stale);
        wire.extend(reply);
        let got = client.take_reply(&wire, &Id::from(7u64)).unwrap();
        assert_eq!(got, Some(Err(RpcErr { code: -1, message: "no".into() })));
        assert_eq!(client.console, ["[   12 ms] boot slot 0 (Committed)"]);
    }

    /// Defect: on a UART that carries both RPC and the typed event lines (the QEMU board), an
    /// `@ota {json}` line decodes as junk (`@ota `) and a frame that is no response; the frame was
    /// dropped, so the console kept a bare `@ota` and the timeline lost the event.
    #[test]
    fn an_event_line_on_the_rpc_line_reaches_the_console_whole() {
        let mut client = client_on_a_pty();
        let mut wire = b"@ota {\"ms\":0,\"event\":\"power_on\"}\r\n".to_vec();
        wire.extend(b"plain {not json\n");
        wire.extend(b"{\"bare\":1}\n");
        wire.extend(encode(br#"{"id":7,"src":"d","result":2}"#, Style::LINE_CRC));
        let got = client.take_reply(&wire, &Id::from(7u64)).unwrap();
        assert_eq!(got, Some(Ok(Value::from(2))));
        assert_eq!(
            client.console,
            [r#"@ota {"ms":0,"event":"power_on"}"#, "plain {not json", r#"{"bare":1}"#]
        );
    }
}
