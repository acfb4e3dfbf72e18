//! The pull client of ota-http-client (§6.2 of the reference): `GET` a bundle over plain HTTP and
//! hand its body to the updater as it arrives.
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

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine;

use super::{find_header, quoted, split_header_line, take_line, trim_line_end};

/// Redirects followed for one pull; one more is an error.
pub const REDIRECTS_MAX: usize = 5;
/// At most this many bytes in a response head.
pub const RESPONSE_HEAD_MAX_BYTES: usize = 8 * 1024;
/// The largest piece handed to the body callback.
pub const READ_PIECE_MAX_BYTES: usize = 4096;
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
    fn connect(detail: impl fmt::Display) -> Self {
        PullError { code: CODE_CONNECT_FAILED, message: format!("Failed to connect to {detail}") }
    }

    fn failed(message: impl Into<String>) -> Self {
        PullError { code: CODE_FAILED, message: message.into() }
    }
}

/// `(-10) Failed to connect …`, the way ota-http-server shows a pull's result.
impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {}", self.code, self.message)
    }
}

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
    fn host_header(&self) -> String {
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

/// The head of a response.
struct ResponseHead {
    status: u16,
    headers: Vec<(String, String)>,
}

/// What one request brought.
enum Reply {
    Outcome(PullOutcome),
    Redirect(String),
}

/// A blocking HTTP client for pulls. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullClient {
    pub identity: DeviceIdentity,
    /// Sent after the standard headers (`update.extra_http_headers`).
    pub extra_headers: Vec<(String, String)>,
    /// How long a connection attempt may take.
    pub connect_timeout_ms: u64,
    /// How long a read or write may wait for the peer.
    pub io_timeout_ms: u64,
}

impl PullClient {
    /// A client with no extra headers, 10 s to connect and 30 s per read.
    pub fn new(identity: DeviceIdentity) -> Self {
        PullClient { identity, extra_headers: Vec::new(), connect_timeout_ms: 10_000, io_timeout_ms: 30_000 }
    }

    /// Fetches `url`, following redirects, and gives the body to `on_body` in pieces as it
    /// arrives. An error from `on_body` stops the pull and comes back as code `-1` with its
    /// message.
    pub fn get(
        &self,
        url: &str,
        mut on_body: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<PullOutcome, PullError> {
        let mut url = HttpUrl::parse(url).map_err(PullError::connect)?;
        for redirects in 0.. {
            match self.get_once(&url, &mut on_body)? {
                Reply::Outcome(outcome) => return Ok(outcome),
                Reply::Redirect(_) if redirects == REDIRECTS_MAX => {
                    return Err(PullError::failed(format!(
                        "Too many redirects: more than {REDIRECTS_MAX}, the last from {url}"
                    )));
                }
                Reply::Redirect(location) => url = url.join(&location).map_err(PullError::connect)?,
            }
        }
        unreachable!("the loop returns")
    }

    /// The request head this client sends for `url`.
    pub fn request_head(&self, url: &HttpUrl) -> Result<String, PullError> {
        let id = &self.identity;
        let or_dash =
            |value: &Option<String>| value.clone().filter(|v| !v.is_empty()).unwrap_or_else(|| "-".into());
        let mut headers = vec![
            ("Host".to_string(), url.host_header()),
            (
                "User-Agent".to_string(),
                format!(
                    "{}/{} (ota-hil/{}; {})",
                    id.app,
                    id.fw_version,
                    env!("CARGO_PKG_VERSION"),
                    id.platform
                ),
            ),
            ("X-MGOS-Device-ID".to_string(), format!("{} {}", or_dash(&id.device_id), or_dash(&id.mac))),
            ("X-MGOS-FW-Version".to_string(), format!("{} {} {}", id.platform, id.fw_version, id.fw_id)),
        ];
        if let Some(userinfo) = &url.userinfo {
            let encoded = base64::engine::general_purpose::STANDARD.encode(userinfo);
            headers.push(("Authorization".to_string(), format!("Basic {encoded}")));
        }
        headers.extend(self.extra_headers.iter().cloned());
        headers.push(("Connection".to_string(), "close".to_string()));
        let mut head = format!("GET {} HTTP/1.1\r\n", url.path_and_query);
        for (name, value) in headers {
            if !super::is_token(&name) || value.contains(['\r', '\n']) {
                return Err(PullError::connect(format!(
                    "{url}: header {} is not a valid header",
                    quoted(&name)
                )));
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        Ok(head)
    }

    fn get_once(
        &self,
        url: &HttpUrl,
        on_body: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Reply, PullError> {
        let head = self.request_head(url)?;
        let mut stream = self.connect(url)?;
        stream
            .write_all(head.as_bytes())
            .map_err(|e| PullError::failed(format!("Update failed: sending the request to {url}: {e}")))?;
        let (response, leftover) = self.read_head(&mut stream, url)?;
        match response.status {
            200 => self.read_body(&mut stream, &response, &leftover, on_body).map(Reply::Outcome),
            304 => Ok(Reply::Outcome(PullOutcome::NotModified)),
            301 | 302 if find_header(&response.headers, "Location").is_some() => Ok(Reply::Redirect(
                find_header(&response.headers, "Location").unwrap_or_default().to_string(),
            )),
            status => Err(PullError { code: -i32::from(status), message: BAD_STATUS.to_string() }),
        }
    }

    fn connect(&self, url: &HttpUrl) -> Result<TcpStream, PullError> {
        let host = url.host.trim_start_matches('[').trim_end_matches(']');
        let addrs =
            (host, url.port).to_socket_addrs().map_err(|e| PullError::connect(format!("{url}: {e}")))?;
        let mut last_error = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, millis(self.connect_timeout_ms)) {
                Ok(stream) => {
                    let timeout = Some(millis(self.io_timeout_ms));
                    stream
                        .set_read_timeout(timeout)
                        .and_then(|()| stream.set_write_timeout(timeout))
                        .map_err(|e| PullError::connect(format!("{url}: {e}")))?;
                    return Ok(stream);
                }
                Err(e) => last_error = Some(format!("{url} ({addr}): {e}")),
            }
        }
        Err(PullError::connect(last_error.unwrap_or_else(|| format!("{url}: the host has no address"))))
    }

    /// Reads the response head. Returns it and the body bytes read along with it.
    fn read_head(&self, stream: &mut TcpStream, url: &HttpUrl) -> Result<(ResponseHead, Vec<u8>), PullError> {
        let mut buf = [0; 1024];
        let mut line = Vec::new();
        let mut lines = Vec::new();
        let mut head_bytes = 0;
        loop {
            let n = self.read(stream, &mut buf, || format!("waiting for the response from {url}"))?;
            if n == 0 {
                return Err(PullError::failed(format!(
                    "Update failed: {url} closed the connection before the response head was complete"
                )));
            }
            let mut at = 0;
            while at < n {
                let Some((used, complete)) =
                    take_line(&mut line, &buf[at..n], RESPONSE_HEAD_MAX_BYTES - head_bytes)
                else {
                    return Err(PullError::failed(format!(
                        "Update failed: the response head from {url} is longer than {RESPONSE_HEAD_MAX_BYTES} bytes"
                    )));
                };
                at += used;
                if !complete {
                    continue;
                }
                head_bytes += line.len();
                let text = String::from_utf8_lossy(trim_line_end(&line)).into_owned();
                line.clear();
                if text.is_empty() {
                    return Ok((parse_response_head(&lines, url)?, buf[at..n].to_vec()));
                }
                lines.push(text);
            }
        }
    }

    fn read_body(
        &self,
        stream: &mut TcpStream,
        response: &ResponseHead,
        leftover: &[u8],
        on_body: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<PullOutcome, PullError> {
        let length = match find_header(&response.headers, "Transfer-Encoding") {
            Some(_) => None,
            None => find_header(&response.headers, "Content-Length")
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok()),
        };
        let Some(length) = length else { return Err(PullError::failed(CHUNKED_REFUSED)) };
        let mut delivered = 0_u64;
        let mut deliver = |piece: &[u8], delivered: &mut u64| {
            *delivered += piece.len() as u64;
            on_body(piece).map_err(PullError::failed)
        };
        let first = &leftover[..leftover.len().min(usize::try_from(length).unwrap_or(usize::MAX))];
        if !first.is_empty() {
            deliver(first, &mut delivered)?;
        }
        let mut buf = vec![0; READ_PIECE_MAX_BYTES];
        while delivered < length {
            let want = buf.len().min(usize::try_from(length - delivered).unwrap_or(usize::MAX));
            let n =
                self.read(stream, &mut buf[..want], || format!("after {delivered} of {length} body bytes"))?;
            if n == 0 {
                return Err(PullError::failed(format!(
                    "Update failed: connection closed after {delivered} of {length} body bytes"
                )));
            }
            deliver(&buf[..n], &mut delivered)?;
        }
        Ok(PullOutcome::Done { bytes: length })
    }

    /// One read, retried when interrupted; a timeout or an error says `where_` it happened.
    fn read(
        &self,
        stream: &mut TcpStream,
        buf: &mut [u8],
        where_: impl Fn() -> String,
    ) -> Result<usize, PullError> {
        loop {
            match stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(PullError::failed(format!(
                        "Update failed: no data for {} ms {}",
                        self.io_timeout_ms,
                        where_()
                    )));
                }
                Err(e) => {
                    return Err(PullError::failed(format!("Update failed: read error {}: {e}", where_())));
                }
            }
        }
    }
}

fn millis(ms: u64) -> Duration {
    // A zero timeout means "none" to the OS and is refused by std; wait at least 1 ms.
    Duration::from_millis(ms.max(1))
}

fn parse_response_head(lines: &[String], url: &HttpUrl) -> Result<ResponseHead, PullError> {
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
