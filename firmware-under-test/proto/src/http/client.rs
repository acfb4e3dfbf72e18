//! The pull client of ota-http-client (§6.2 of the reference), without its socket: the bytes of
//! the `GET` for a bundle ([`request_head`]) and a push parser for the response
//! ([`ResponseParser`]) that hands the body on as it arrives. The loop that connects, writes the
//! request and reads the socket belongs to the platform (the virtual board's is
//! `ota_firmware::net::PullClient`); the table below is what the two give together.
//!
//! It behaves as Mongoose OS's client does (OHC `cfa0c60^`): the device identifies itself in
//! `X-MGOS-Device-ID` and `X-MGOS-FW-Version`, and the server decides whether there is an update.
//!
//! | response | result |
//! |---|---|
//! | `200` with `Content-Length` | the body goes to the callback in pieces; [`PullOutcome::Done`] |
//! | `200` chunked, or without `Content-Length` | `-1` "Invalid content-length, perhaps chunked-encoding" |
//! | `301`/`302` with `Location` | followed, at most [`REDIRECTS_MAX`] times |
//! | `304` | [`PullOutcome::NotModified`] |
//! | any other code `N` | `-N` "Invalid HTTP response code" |
//! | no connection (bad URL, `https://`, refused, timed out) | `-10` "Failed to connect …" |
//! | a body cut short, a silent server, a callback's refusal | `-1` with what happened |
//!
//! Messages start with Mongoose OS's text and may add what went wrong after it.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use base64::Engine;

use super::{find_header, quoted, split_header_line, take_line, trim_line_end};

/// Redirects followed for one pull; one more is an error.
pub const REDIRECTS_MAX: usize = 5;
/// At most this many bytes in a response head.
pub const RESPONSE_HEAD_MAX_BYTES: usize = 8 * 1024;
/// The largest piece handed to the body callback.
pub const READ_PIECE_MAX_BYTES: usize = 4096;
/// The most bytes to read at once while the response head is incomplete; the body bytes read
/// along with the head's end are the body's first piece.
pub const HEAD_READ_MAX_BYTES: usize = 1024;
/// The code of a pull that could not connect, as Mongoose OS reports it.
pub const CODE_CONNECT_FAILED: i32 = -10;
/// The code of a pull that failed after connecting, as Mongoose OS reports it.
pub const CODE_FAILED: i32 = -1;

const CHUNKED_REFUSED: &str = "Invalid content-length, perhaps chunked-encoding";
const BAD_STATUS: &str = "Invalid HTTP response code";

/// Who is asking: sent in the `X-MGOS-*` headers and the `User-Agent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// `device.id`; `-` is sent when it is unset or empty.
    pub device_id: Option<String>,
    /// The MAC address; `-` is sent when there is none (the virtual board has none).
    pub mac: Option<String>,
    /// The app's name, for the `User-Agent`.
    pub app: String,
    /// `arch`, e.g. `esp32` or `host`.
    pub platform: String,
    pub fw_version: String,
    pub fw_id: String,
}

/// How a pull ended well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullOutcome {
    /// `304`: the server has nothing newer.
    NotModified,
    /// The whole body, `bytes` long, went to the callback.
    Done { bytes: u64 },
}

/// How a pull failed, in Mongoose OS's terms: a negative code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullError {
    pub code: i32,
    pub message: String,
}

impl PullError {
    /// Code `-10`: the pull never reached a server (`detail` says which and why).
    pub fn connect(detail: impl fmt::Display) -> Self {
        PullError { code: CODE_CONNECT_FAILED, message: format!("Failed to connect to {detail}") }
    }

    /// Code `-1`: the pull failed after connecting.
    pub fn failed(message: impl Into<String>) -> Self {
        PullError { code: CODE_FAILED, message: message.into() }
    }
}

/// `(-10) Failed to connect …`, the way ota-http-server shows a pull's result.
impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {}", self.code, self.message)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PullError {}

/// A parsed `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// A name, an IPv4 address, or an IPv6 address in brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path_and_query: String,
    /// `user:password` before the host, sent as basic authorization.
    pub userinfo: Option<String>,
}

impl HttpUrl {
    /// Parses `http://[user:pass@]host[:port][/path][?query]`; a fragment is dropped.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some(rest) = strip_prefix_ignore_case(url, "http://") else {
            if strip_prefix_ignore_case(url, "https://").is_some() {
                return Err(format!("{}: https is not supported (no TLS here); use http://", quoted(url)));
            }
            return Err(format!("{}: not an http://HOST[:PORT]/PATH URL", quoted(url)));
        };
        if rest.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control()) {
            return Err(format!("{}: a space or control character; percent-encode it", quoted(url)));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = rest.find(['/', '?']).map_or((rest, ""), |i| rest.split_at(i));
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo.to_string()), host_port),
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port).map_err(|e| format!("{}: {e}", quoted(url)))?;
        let path_and_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(HttpUrl { host: host.to_string(), port, path_and_query, userinfo })
    }

    /// The URL a `Location` header points to, relative to this one.
    pub fn join(&self, location: &str) -> Result<HttpUrl, String> {
        let has_scheme = location.split_once(':').is_some_and(|(scheme, _)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        if has_scheme {
            return HttpUrl::parse(location);
        }
        if location.starts_with("//") {
            return HttpUrl::parse(&format!("http:{location}"));
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            let base = self.path_and_query.split('?').next().unwrap_or("/");
            format!("{}{location}", &base[..=base.rfind('/').unwrap_or(0)])
        };
        HttpUrl::parse(&format!("http://{}{path}", self.authority()))
    }

    /// `host` or `host:port`, as the `Host` header carries it.
    pub fn host_header(&self) -> String {
        match self.port {
            80 => self.host.clone(),
            port => format!("{}:{port}", self.host),
        }
    }

    fn authority(&self) -> String {
        match &self.userinfo {
            Some(userinfo) => format!("{userinfo}@{}", self.host_header()),
            None => self.host_header(),
        }
    }
}

/// Without the user information, so that a password never reaches a log.
impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.path_and_query)
    }
}

fn strip_prefix_ignore_case<'u>(text: &'u str, prefix: &str) -> Option<&'u str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

fn split_host_port(host_port: &str) -> Result<(&str, u16), String> {
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let Some(end) = v6.find(']') else { return Err("an IPv6 address without its `]`".to_string()) };
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(format!("{} after the IPv6 address", quoted(after))),
            };
            (&host_port[..end + 2], port)
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() || host == "[]" {
        return Err("no host".to_string());
    }
    let port = match port {
        None | Some("") => 80,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(format!("bad port {}", quoted(text))),
        },
    };
    Ok((host, port))
}

/// The request head a device sends to pull `url`: `GET`, `Host`, `User-Agent`, the `X-MGOS-*`
/// identity headers, basic authorization from the URL's user information, the `extra_headers`
/// (`update.extra_http_headers`) and `Connection: close`. An extra header that is not a valid
/// header refuses the pull before anything is sent.
pub fn request_head(
    identity: &DeviceIdentity,
    extra_headers: &[(String, String)],
    url: &HttpUrl,
) -> Result<String, PullError> {
    let id = identity;
    let or_dash =
        |value: &Option<String>| value.clone().filter(|v| !v.is_empty()).unwrap_or_else(|| "-".into());
    let mut headers = alloc::vec![
        ("Host".to_string(), url.host_header()),
        (
            "User-Agent".to_string(),
            format!("{}/{} (ota-hil/{}; {})", id.app, id.fw_version, env!("CARGO_PKG_VERSION"), id.platform),
        ),
        ("X-MGOS-Device-ID".to_string(), format!("{} {}", or_dash(&id.device_id), or_dash(&id.mac))),
        ("X-MGOS-FW-Version".to_string(), format!("{} {} {}", id.platform, id.fw_version, id.fw_id)),
    ];
    if let Some(userinfo) = &url.userinfo {
        let encoded = base64::engine::general_purpose::STANDARD.encode(userinfo);
        headers.push(("Authorization".to_string(), format!("Basic {encoded}")));
    }
    headers.extend(extra_headers.iter().cloned());
    headers.push(("Connection".to_string(), "close".to_string()));
    let mut head = format!("GET {} HTTP/1.1\r\n", url.path_and_query);
    for (name, value) in headers {
        if !super::is_token(&name) || value.contains(['\r', '\n']) {
            return Err(PullError::connect(format!("{url}: header {} is not a valid header", quoted(&name))));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    Ok(head)
}

/// What one response asks of the pull, once [`ResponseParser::feed`] has seen enough of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The pull is over: a `304`, or a `200` whose whole body went to the callback.
    Outcome(PullOutcome),
    /// A `301` or `302`: fetch this `Location` (resolve it with [`HttpUrl::join`]) instead.
    Redirect(String),
}

/// Whether [`ResponseParser::feed`] needs more bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Read more (at most [`ResponseParser::read_size_max`] bytes) and feed them.
    More,
    /// The response is decided; stop reading.
    Reply(Reply),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Collecting the head, line by line; `head_bytes` counts the complete lines.
    Head { line: Vec<u8>, lines: Vec<String>, head_bytes: usize },
    /// A `200`: `delivered` of `length` body bytes went to the callback.
    Body { length: u64, delivered: u64 },
    /// A reply was given or an error returned; nothing more is read.
    Done,
}

/// A push parser for the response to a pull: feed it what the socket gives and it says when the
/// response is decided, handing a `200`'s body to a callback in the pieces it was fed (the bytes
/// that came with the head's end are the first piece), never past `Content-Length`. It never
/// buffers a body, and holds at most [`RESPONSE_HEAD_MAX_BYTES`] of head.
///
/// ```
/// use ota_proto::http::client::{HttpUrl, Progress, PullOutcome, Reply, ResponseParser};
///
/// let url = HttpUrl::parse("http://127.0.0.1:8000/fw.zip").unwrap();
/// let mut parser = ResponseParser::new(&url);
/// let mut body = Vec::new();
/// let mut keep = |piece: &[u8]| -> Result<(), String> { Ok(body.extend_from_slice(piece)) };
/// assert_eq!(parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", &mut keep), Ok(Progress::More));
/// let done = Progress::Reply(Reply::Outcome(PullOutcome::Done { bytes: 5 }));
/// assert_eq!(parser.feed(b"lo and more", &mut keep), Ok(done));
/// assert_eq!(body, b"hello");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseParser {
    /// The URL as messages show it (without user information).
    url: String,
    state: State,
}

impl ResponseParser {
    /// A parser for the response to a request for `url`.
    pub fn new(url: &HttpUrl) -> Self {
        ResponseParser {
            url: url.to_string(),
            state: State::Head { line: Vec::new(), lines: Vec::new(), head_bytes: 0 },
        }
    }

    /// How many bytes the next read should ask for at most: [`HEAD_READ_MAX_BYTES`] while the
    /// head is incomplete, then what is left of the body, at most [`READ_PIECE_MAX_BYTES`] (so
    /// that no read takes bytes past the body); 0 once the response is decided.
    pub fn read_size_max(&self) -> usize {
        match &self.state {
            State::Head { .. } => HEAD_READ_MAX_BYTES,
            State::Body { length, delivered } => {
                READ_PIECE_MAX_BYTES.min(usize::try_from(length - delivered).unwrap_or(usize::MAX))
            }
            State::Done => 0,
        }
    }

    /// Where the response is, for a message about a read that timed out or failed:
    /// `waiting for the response from URL` or `after N of M body bytes`.
    pub fn waiting_for(&self) -> String {
        match &self.state {
            State::Body { length, delivered } => format!("after {delivered} of {length} body bytes"),
            State::Head { .. } | State::Done => format!("waiting for the response from {}", self.url),
        }
    }

    /// The error for a connection that closed before the response was decided.
    pub fn closed(&self) -> PullError {
        match &self.state {
            State::Body { length, delivered } => PullError::failed(format!(
                "Update failed: connection closed after {delivered} of {length} body bytes"
            )),
            State::Head { .. } | State::Done => PullError::failed(format!(
                "Update failed: {} closed the connection before the response head was complete",
                self.url
            )),
        }
    }

    /// Takes the next bytes of the response. Body bytes go to `on_body`; an error from it stops
    /// the pull with code `-1` and its message. Bytes past the body are ignored, and so is
    /// anything fed once the response is decided or has failed.
    pub fn feed(
        &mut self,
        input: &[u8],
        on_body: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Progress, PullError> {
        let result = match self.state {
            State::Head { .. } => self.feed_head(input, on_body),
            State::Body { .. } => self.feed_body(input, on_body),
            State::Done => Ok(Progress::More),
        };
        if !matches!(result, Ok(Progress::More)) {
            self.state = State::Done;
        }
        result
    }

    fn feed_head(
        &mut self,
        input: &[u8],
        on_body: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Progress, PullError> {
        let State::Head { line, lines, head_bytes } = &mut self.state else {
            unreachable!("feed_head runs in the Head state")
        };
        let mut at = 0;
        while at < input.len() {
            let Some((used, complete)) = take_line(line, &input[at..], RESPONSE_HEAD_MAX_BYTES - *head_bytes)
            else {
                return Err(PullError::failed(format!(
                    "Update failed: the response head from {} is longer than {RESPONSE_HEAD_MAX_BYTES} bytes",
                    self.url
                )));
            };
            at += used;
            if !complete {
                continue;
            }
            *head_bytes += line.len();
            let text = String::from_utf8_lossy(trim_line_end(line)).into_owned();
            line.clear();
            if text.is_empty() {
                let head = parse_response_head(lines, &self.url)?;
                return self.start_body(&head, &input[at..], on_body);
            }
            lines.push(text);
        }
        Ok(Progress::More)
    }

    /// Decides on a complete head; for a `200`, hands on the body bytes that came with it.
    fn start_body(
        &mut self,
        response: &ResponseHead,
        rest: &[u8],
        on_body: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Progress, PullError> {
        match response.status {
            200 => {}
            304 => return Ok(Progress::Reply(Reply::Outcome(PullOutcome::NotModified))),
            301 | 302 if find_header(&response.headers, "Location").is_some() => {
                let location = find_header(&response.headers, "Location").unwrap_or_default();
                return Ok(Progress::Reply(Reply::Redirect(location.to_owned())));
            }
            status => return Err(PullError { code: -i32::from(status), message: BAD_STATUS.to_string() }),
        }
        let length = body_length(&response.headers)?;
        self.state = State::Body { length, delivered: 0 };
        self.feed_body(rest, on_body)
    }

    fn feed_body(
        &mut self,
        input: &[u8],
        on_body: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Progress, PullError> {
        let State::Body { length, delivered } = &mut self.state else {
            unreachable!("feed_body runs in the Body state")
        };
        // `delivered <= length` always: a piece is cut to what is left.
        let left = *length - *delivered;
        let piece = &input[..input.len().min(usize::try_from(left).unwrap_or(usize::MAX))];
        if !piece.is_empty() {
            *delivered += piece.len() as u64;
            on_body(piece).map_err(PullError::failed)?;
        }
        match *delivered == *length {
            true => Ok(Progress::Reply(Reply::Outcome(PullOutcome::Done { bytes: *length }))),
            false => Ok(Progress::More),
        }
    }
}

/// The head of a response.
struct ResponseHead {
    status: u16,
    headers: Vec<(String, String)>,
}

fn parse_response_head(lines: &[String], url: &str) -> Result<ResponseHead, PullError> {
    let bad = |what: String| PullError::failed(format!("Update failed: {what} from {url}"));
    let status_line = lines.first().map(String::as_str).unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let status = match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") && code.len() == 3 => {
            code.parse::<u16>().ok()
        }
        _ => None,
    };
    let Some(status) = status else {
        return Err(bad(format!("malformed status line {}", quoted(status_line))));
    };
    let headers = lines[1..]
        .iter()
        .map(|line| split_header_line(line).map(|(n, v)| (n.to_string(), v.to_string())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    Ok(ResponseHead { status, headers })
}

/// A `200`'s body length. Like Mongoose OS, the client reads only bodies with a
/// `Content-Length`: chunked ones are refused, and so is a length that is not a number; one past
/// `u64::MAX` is refused with that bound named.
fn body_length(headers: &[(String, String)]) -> Result<u64, PullError> {
    if find_header(headers, "Transfer-Encoding").is_some() {
        return Err(PullError::failed(CHUNKED_REFUSED));
    }
    let Some(text) = find_header(headers, "Content-Length") else {
        return Err(PullError::failed(CHUNKED_REFUSED));
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PullError::failed(CHUNKED_REFUSED));
    }
    text.parse::<u64>().map_err(|_| {
        PullError::failed(format!(
            "{CHUNKED_REFUSED}: Content-Length {} is larger than the limit of {} bytes",
            quoted(text),
            u64::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, path: &str) -> HttpUrl {
        HttpUrl { host: host.into(), port, path_and_query: path.into(), userinfo: None }
    }

    #[test]
    fn urls_parse_into_host_port_and_path() {
        assert_eq!(HttpUrl::parse("http://h/fw.zip"), Ok(url("h", 80, "/fw.zip")));
        assert_eq!(HttpUrl::parse("HTTP://h:8080"), Ok(url("h", 8080, "/")));
        assert_eq!(HttpUrl::parse("http://h?v=1#frag"), Ok(url("h", 80, "/?v=1")));
        assert_eq!(HttpUrl::parse("http://[::1]:81/a"), Ok(url("[::1]", 81, "/a")));
        let with_user = HttpUrl::parse("http://u:p@h/a").unwrap();
        assert_eq!(with_user.userinfo.as_deref(), Some("u:p"));
        assert_eq!(with_user.to_string(), "http://h/a");
        for bad in [
            "https://h/",
            "ftp://h/",
            "h/fw.zip",
            "http:///x",
            "http://h:0/",
            "http://h:99999/",
            "http://h/a b",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn locations_resolve_against_the_current_url() {
        let base = url("h", 8080, "/dir/fw.zip?x=1");
        assert_eq!(base.join("http://o/new").unwrap(), url("o", 80, "/new"));
        assert_eq!(base.join("//o:81/new").unwrap(), url("o", 81, "/new"));
        assert_eq!(base.join("/abs").unwrap(), url("h", 8080, "/abs"));
        assert_eq!(base.join("other.zip").unwrap(), url("h", 8080, "/dir/other.zip"));
        assert!(base.join("https://o/").is_err());
    }
}
