//! An incremental HTTP/1.1 request parser: bytes in pieces of any size, events out.
//!
//! Feed it what the socket delivers. It gives [`RequestEvent::Head`] once the head is complete,
//! then [`RequestEvent::Body`] for each piece of the body as it arrives (slices of the input,
//! never copied or gathered), then [`RequestEvent::End`]. The body is framed by
//! `Content-Length` or by `Transfer-Encoding: chunked`; without either it is empty, whatever the
//! method.
//!
//! ```
//! use ota_proto::http::request::{RequestEvent, RequestParser};
//!
//! let mut parser = RequestParser::new();
//! let mut body = Vec::new();
//! for piece in [&b"POST /rpc HTTP/1.1\r\nContent-Le"[..], b"ngth: 5\r\n\r\nhel", b"lo"] {
//!     for event in parser.feed(piece) {
//!         match event.unwrap() {
//!             RequestEvent::Head(head) => assert_eq!(head.path, "/rpc"),
//!             RequestEvent::Body(bytes) => body.extend_from_slice(bytes),
//!             RequestEvent::End => assert_eq!(body, b"hello"),
//!         }
//!     }
//! }
//! assert!(parser.is_done());
//! ```
//!
//! One request per connection: the server answers with `Connection: close`, so bytes after
//! [`RequestEvent::End`] are left unconsumed (see [`RequestEvents::rest`]).

use super::{
    HttpError, find_header, is_token, quoted, quoted_bytes, split_header_line, take_line, trim_line_end,
};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// At most this many header fields in a request head.
pub const HEADERS_MAX: usize = 64;
/// At most this many bytes in a request head, request line and final empty line included.
pub const HEAD_MAX_BYTES: usize = 8 * 1024;
/// At most this many bytes in one chunk-size line of a chunked body, extensions included.
pub const CHUNK_LINE_MAX_BYTES: usize = 256;
/// The body limit of [`RequestParser::new`]: larger than any slot a bundle is written to.
pub const BODY_MAX_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;

/// The request line and headers of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// As sent, e.g. `POST`. Methods are case-sensitive.
    pub method: String,
    /// The target's path as sent, not percent-decoded, e.g. `/rpc/OTA.Update`; `*` for
    /// `OPTIONS *`. An absolute-form target (`http://host/path`) is reduced to its path.
    pub path: String,
    /// The query's `name=value` pairs in order, percent-decoded, `+` read as a space.
    pub query: Vec<(String, String)>,
    /// Header fields in order, names as sent; look them up with [`RequestHead::header`].
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header named `name`, ignoring ASCII case.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The first query parameter named `name` (exact match), percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the client waits for `HTTP/1.1 100 Continue` before it sends the body. curl asks
    /// for it when a body is larger than 1 MiB and waits a second when no answer comes.
    pub fn expects_continue(&self) -> bool {
        self.header("Expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// What the parser found in the bytes fed so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestEvent<'a> {
    /// The request line and headers; comes once, first.
    Head(RequestHead),
    /// The next bytes of the body, a slice of the input; never empty.
    Body(&'a [u8]),
    /// The body is complete; comes once, last.
    End,
}

/// How the body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    RequestLine,
    Headers,
    /// `Content-Length` framing: this many body bytes still to come.
    Body {
        remaining: u64,
    },
    ChunkSize,
    ChunkData {
        remaining: u64,
    },
    /// The CRLF after a chunk's data; `seen_cr` once its CR came.
    ChunkDataEnd {
        seen_cr: bool,
    },
    Trailers,
    EndPending,
    Done,
    Failed(HttpError),
}

/// An incremental request parser. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct RequestParser {
    state: State,
    body_max_bytes: u64,
    /// The line being collected: of the head, a chunk size or a trailer.
    line: Vec<u8>,
    head_bytes: usize,
    head: Option<RequestHead>,
    body_bytes: u64,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestParser {
    /// A parser for one request whose body may be up to [`BODY_MAX_BYTES_DEFAULT`].
    pub fn new() -> Self {
        Self::with_body_max_bytes(BODY_MAX_BYTES_DEFAULT)
    }

    /// A parser for one request whose body may be up to `body_max_bytes`; a larger one is
    /// refused with 413, before any of it is given out when its length is declared.
    pub fn with_body_max_bytes(body_max_bytes: u64) -> Self {
        RequestParser {
            state: State::RequestLine,
            body_max_bytes,
            line: Vec::new(),
            head_bytes: 0,
            head: None,
            body_bytes: 0,
        }
    }

    /// The events in `input`, in order. Iteration stops when the input is used up, after
    /// [`RequestEvent::End`], or after the first error.
    pub fn feed<'p, 'a>(&'p mut self, input: &'a [u8]) -> RequestEvents<'p, 'a> {
        RequestEvents { parser: self, rest: input, failed: false }
    }

    /// Whether the whole request, body included, has been parsed and [`RequestEvent::End`]
    /// given out.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether any byte of a request has arrived: a connection closed before that carried no
    /// request and needs no answer.
    pub fn has_started(&self) -> bool {
        self.state != State::RequestLine || !self.line.is_empty()
    }

    /// Body bytes given out so far (chunked framing removed).
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Says whether the request was complete when the connection closed: `Ok` after
    /// [`RequestEvent::End`] (or when only `End` is left to give out), an error that says
    /// where the request was cut otherwise.
    pub fn finish(&self) -> Result<(), HttpError> {
        let cut = |what: String| Err(HttpError::bad_request(format!("connection closed {what}")));
        match &self.state {
            State::EndPending | State::Done => Ok(()),
            State::Failed(error) => Err(error.clone()),
            State::RequestLine | State::Headers => {
                cut(format!("after {} bytes of the request head", self.head_bytes + self.line.len()))
            }
            State::Body { remaining } => cut(format!(
                "after {} of {} body bytes",
                self.body_bytes,
                self.body_bytes.saturating_add(*remaining)
            )),
            State::ChunkSize | State::ChunkData { .. } | State::ChunkDataEnd { .. } | State::Trailers => {
                cut(format!("inside the chunked body, after {} body bytes", self.body_bytes))
            }
        }
    }

    /// Parses from the start of `input` up to the next event. Returns how many bytes it used
    /// and the event, or `None` when it used all of `input` and needs more (or, once done,
    /// when it uses nothing).
    pub fn step<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<RequestEvent<'a>>), HttpError> {
        if let State::Failed(error) = &self.state {
            return Err(error.clone());
        }
        let result = self.step_inner(input);
        if let Err(error) = &result {
            self.state = State::Failed(error.clone());
        }
        result
    }

    fn step_inner<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<RequestEvent<'a>>), HttpError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                State::EndPending => {
                    self.state = State::Done;
                    return Ok((used, Some(RequestEvent::End)));
                }
                State::Done | State::Failed(_) => return Ok((used, None)),
                State::Body { remaining } | State::ChunkData { remaining } if !rest.is_empty() => {
                    let n = self.take_body(rest, remaining);
                    return Ok((used + n, Some(RequestEvent::Body(&rest[..n]))));
                }
                _ if rest.is_empty() => return Ok((used, None)),
                State::RequestLine | State::Headers => {
                    let (n, head) = self.head_line(rest)?;
                    used += n;
                    if let Some(head) = head {
                        return Ok((used, Some(RequestEvent::Head(head))));
                    }
                }
                State::ChunkSize => used += self.chunk_size_line(rest)?,
                State::ChunkDataEnd { seen_cr } => used += self.chunk_data_end(rest[0], seen_cr)?,
                State::Trailers => used += self.trailer_line(rest)?,
                State::Body { .. } | State::ChunkData { .. } => unreachable!("handled above"),
            }
        }
    }

    /// Takes up to `remaining` body bytes of the non-empty `rest` and moves on when the body
    /// or chunk is complete. Returns how many it took.
    fn take_body(&mut self, rest: &[u8], remaining: u64) -> usize {
        let n = rest.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let left = remaining - n as u64;
        self.body_bytes += n as u64;
        self.state = match (&self.state, left) {
            (State::Body { .. }, 0) => State::EndPending,
            (State::Body { .. }, _) => State::Body { remaining: left },
            (_, 0) => State::ChunkDataEnd { seen_cr: false },
            (_, _) => State::ChunkData { remaining: left },
        };
        n
    }

    /// Collects one line of the head. Returns the bytes used and, after the empty line that
    /// ends the head, the head.
    fn head_line(&mut self, rest: &[u8]) -> Result<(usize, Option<RequestHead>), HttpError> {
        let Some((n, complete)) = take_line(&mut self.line, rest, HEAD_MAX_BYTES - self.head_bytes) else {
            return Err(self.head_too_large());
        };
        if !complete {
            return Ok((n, None));
        }
        self.head_bytes += self.line.len();
        let line = core::mem::take(&mut self.line);
        let text = trim_line_end(&line);
        if self.state == State::RequestLine {
            self.head = Some(parse_request_line(text)?);
            self.state = State::Headers;
            return Ok((n, None));
        }
        let head = self.head.as_mut().expect("the request line came first");
        if !text.is_empty() {
            if head.headers.len() == HEADERS_MAX {
                return Err(HttpError::new(431, format!("more than {HEADERS_MAX} header fields")));
            }
            let text = String::from_utf8_lossy(text);
            let (name, value) = split_header_line(&text).map_err(HttpError::bad_request)?;
            head.headers.push((name.to_string(), value.to_string()));
            return Ok((n, None));
        }
        let head = self.head.take().expect("the request line came first");
        self.start_body(framing(&head, self.body_max_bytes)?);
        Ok((n, Some(head)))
    }

    fn head_too_large(&self) -> HttpError {
        if self.state == State::RequestLine {
            HttpError::new(414, format!("request line is longer than {HEAD_MAX_BYTES} bytes"))
        } else {
            HttpError::new(431, format!("request head is longer than {HEAD_MAX_BYTES} bytes"))
        }
    }

    fn start_body(&mut self, framing: Framing) {
        self.state = match framing {
            Framing::Length(0) => State::EndPending,
            Framing::Length(n) => State::Body { remaining: n },
            Framing::Chunked => State::ChunkSize,
        };
    }

    fn chunk_size_line(&mut self, rest: &[u8]) -> Result<usize, HttpError> {
        let Some((n, complete)) = take_line(&mut self.line, rest, CHUNK_LINE_MAX_BYTES) else {
            return Err(HttpError::bad_request(format!(
                "chunk-size line is longer than {CHUNK_LINE_MAX_BYTES} bytes"
            )));
        };
        if !complete {
            return Ok(n);
        }
        let line = core::mem::take(&mut self.line);
        let size = parse_chunk_size(trim_line_end(&line), self.body_max_bytes)?;
        if size == 0 {
            self.state = State::Trailers;
        } else if size > self.body_max_bytes.saturating_sub(self.body_bytes) {
            return Err(self.body_too_large(self.body_bytes.saturating_add(size)));
        } else {
            self.state = State::ChunkData { remaining: size };
        }
        Ok(n)
    }

    fn body_too_large(&self, at_least_bytes: u64) -> HttpError {
        HttpError::new(
            413,
            format!(
                "body of {at_least_bytes} bytes or more is larger than the limit of {} bytes",
                self.body_max_bytes
            ),
        )
    }

    fn chunk_data_end(&mut self, byte: u8, seen_cr: bool) -> Result<usize, HttpError> {
        self.state = match (byte, seen_cr) {
            (b'\r', false) => State::ChunkDataEnd { seen_cr: true },
            (b'\n', _) => State::ChunkSize,
            _ => {
                return Err(HttpError::bad_request(format!(
                    "chunk data is not followed by CRLF (found {} after {} body bytes)",
                    quoted_bytes(&[byte]),
                    self.body_bytes
                )));
            }
        };
        Ok(1)
    }

    /// Trailer fields after the last chunk are read and dropped; they count against the head
    /// limit.
    fn trailer_line(&mut self, rest: &[u8]) -> Result<usize, HttpError> {
        let Some((n, complete)) = take_line(&mut self.line, rest, HEAD_MAX_BYTES - self.head_bytes) else {
            return Err(HttpError::new(
                431,
                format!("request head and trailers are longer than {HEAD_MAX_BYTES} bytes"),
            ));
        };
        if complete {
            self.head_bytes += self.line.len();
            if trim_line_end(&self.line).is_empty() {
                self.state = State::EndPending;
            }
            self.line.clear();
        }
        Ok(n)
    }
}

/// The events of one [`RequestParser::feed`] call.
#[derive(Debug)]
pub struct RequestEvents<'p, 'a> {
    parser: &'p mut RequestParser,
    rest: &'a [u8],
    failed: bool,
}

impl<'a> RequestEvents<'_, 'a> {
    /// The input not used yet: after [`RequestEvent::End`], bytes that belong to no request.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for RequestEvents<'_, 'a> {
    type Item = Result<RequestEvent<'a>, HttpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.parser.step(self.rest) {
            Ok((used, event)) => {
                self.rest = &self.rest[used..];
                event.map(Ok)
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

fn parse_request_line(line: &[u8]) -> Result<RequestHead, HttpError> {
    let bad = || HttpError::bad_request(format!("malformed request line {}", quoted_bytes(line)));
    let text = core::str::from_utf8(line).map_err(|_| bad())?;
    let mut words = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(bad());
    };
    if !is_token(method) {
        return Err(HttpError::bad_request(format!("bad method {}", quoted(method))));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(match version.strip_prefix("HTTP/") {
            Some(_) => HttpError::new(
                505,
                format!("HTTP version {} is not supported; send HTTP/1.1", quoted(version)),
            ),
            None => bad(),
        });
    }
    let (path, query) = split_target(target)?;
    Ok(RequestHead { method: method.to_string(), path, query, headers: Vec::new() })
}

/// Splits a request target into its path and decoded query.
fn split_target(target: &str) -> Result<(String, Vec<(String, String)>), HttpError> {
    if target == "*" {
        return Ok((target.to_string(), Vec::new()));
    }
    let origin_form = match target.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => {
            let after_authority = target[7..].find(['/', '?']).map_or("", |i| &target[7 + i..]);
            if after_authority.starts_with('?') {
                format!("/{after_authority}")
            } else {
                after_authority.to_string()
            }
        }
        _ => target.to_string(),
    };
    if !origin_form.starts_with('/') && !origin_form.is_empty() {
        return Err(HttpError::bad_request(format!("request target {} is not a path", quoted(target))));
    }
    let origin_form = if origin_form.is_empty() { "/".to_string() } else { origin_form };
    let without_fragment = origin_form.split('#').next().unwrap_or_default();
    let (path, query) = without_fragment.split_once('?').unwrap_or((without_fragment, ""));
    Ok((path.to_string(), parse_query(query)?))
}

/// Parses `a=1&b=x+y&c` into pairs, percent-decoding names and values and reading `+` as a
/// space, as HTML forms encode them.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, HttpError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` in one query component; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, HttpError> {
    let bad = |why: &str| HttpError::bad_request(format!("bad query component {}: {why}", quoted(text)));
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                let [Some(hi), Some(lo)] = hex else { return Err(bad("`%` needs two hex digits")) };
                let digits =
                    core::str::from_utf8(&[hi, lo]).ok().and_then(|d| u8::from_str_radix(d, 16).ok());
                out.push(digits.ok_or_else(|| bad("`%` needs two hex digits"))?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| bad("it decodes to bytes that are not UTF-8"))
}

/// Decides how the body is delimited, refusing what this server cannot read.
fn framing(head: &RequestHead, body_max_bytes: u64) -> Result<Framing, HttpError> {
    let field_values = |name: &str| -> Vec<&str> {
        head.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    };
    let codings = field_values("Transfer-Encoding");
    let lengths = field_values("Content-Length");
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(HttpError::bad_request("request has both Content-Length and Transfer-Encoding"));
        }
        if codings.iter().any(|c| !c.eq_ignore_ascii_case("chunked")) {
            let all = codings.join(", ");
            return Err(HttpError::new(
                501,
                format!("Transfer-Encoding {} is not supported; only chunked is", quoted(&all)),
            ));
        }
        return Ok(Framing::Chunked);
    }
    let Some(first) = lengths.first() else { return Ok(Framing::Length(0)) };
    if lengths.iter().any(|l| l != first) {
        return Err(HttpError::bad_request(format!(
            "conflicting Content-Length values {}",
            quoted(&lengths.join(", "))
        )));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::bad_request(format!("Content-Length {} is not a number", quoted(first))));
    }
    // All digits: the only way not to parse is to be past u64::MAX, far past the limit.
    let Ok(length) = first.parse::<u64>() else {
        return Err(HttpError::new(
            413,
            format!("Content-Length {} is larger than the limit of {body_max_bytes} bytes", quoted(first)),
        ));
    };
    if length > body_max_bytes {
        return Err(HttpError::new(
            413,
            format!("body of {length} bytes is larger than the limit of {body_max_bytes} bytes"),
        ));
    }
    Ok(Framing::Length(length))
}

/// Reads the hexadecimal size at the start of a chunk-size line; extensions after `;` are
/// ignored. A size past `u64::MAX` is refused as larger than `body_max_bytes`.
fn parse_chunk_size(line: &[u8], body_max_bytes: u64) -> Result<u64, HttpError> {
    let digits_end = line.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
    let (digits, after) = line.split_at(digits_end);
    let ext_ok = after.iter().find(|b| !matches!(b, b' ' | b'\t')).is_none_or(|&b| b == b';');
    if digits.is_empty() || !ext_ok {
        return Err(HttpError::bad_request(format!("bad chunk-size line {}", quoted_bytes(line))));
    }
    let digits = core::str::from_utf8(digits).expect("hex digits are ASCII");
    u64::from_str_radix(digits, 16).map_err(|_| {
        HttpError::new(
            413,
            format!("chunk size {} is larger than the limit of {body_max_bytes} bytes", quoted(digits)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn query_components_are_percent_decoded_with_plus_as_space() {
        let pairs = parse_query("url=http%3A%2F%2Fh%2Ffw.zip&note=a+b&flag&&empty=").unwrap();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("url", "http://h/fw.zip"), ("note", "a b"), ("flag", ""), ("empty", "")]);
        assert!(parse_query("a=%4").is_err());
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%ff").is_err());
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(parse_chunk_size(b"1A", u64::MAX), Ok(26));
        assert_eq!(parse_chunk_size(b"0", u64::MAX), Ok(0));
        assert_eq!(parse_chunk_size(b"10;name=value", u64::MAX), Ok(16));
        assert_eq!(parse_chunk_size(b"10 ; name", u64::MAX), Ok(16));
        assert!(parse_chunk_size(b"", u64::MAX).is_err());
        assert!(parse_chunk_size(b"x1", u64::MAX).is_err());
        assert!(parse_chunk_size(b"1 2", u64::MAX).is_err());
        assert_eq!(parse_chunk_size(b"11111111111111111", 16).unwrap_err().status, 413);
    }

    #[test]
    fn absolute_form_targets_are_reduced_to_their_path() {
        assert_eq!(
            split_target("http://h:80/update?a=1").unwrap(),
            ("/update".into(), vec![("a".into(), "1".into())])
        );
        assert_eq!(split_target("http://h").unwrap(), ("/".into(), vec![]));
        assert_eq!(split_target("HTTP://h?x").unwrap(), ("/".into(), vec![("x".into(), String::new())]));
        assert!(split_target("update").is_err());
    }
}
