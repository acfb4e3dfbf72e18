//! HTTP: requests, multipart bodies, responses, and the pull client.
//!
//! The server side is pure: [`request::RequestParser`] and [`multipart::MultipartParser`] take
//! bytes in pieces of any size and give events, and [`response::Response`] gives bytes, so the
//! same parsing runs in the virtual board and on a device. Bodies are never buffered whole: a
//! bundle is megabytes and reaches the updater in the pieces the socket delivered. Only
//! [`client`] touches a socket.
//!
//! Parsing errors on the server side are one type, [`HttpError`]: the status code to answer and
//! a message that says what was wrong.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub mod client;
pub mod multipart;
pub mod request;
pub mod response;

/// A request the server cannot accept: the status code to answer with and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    /// The status code to answer with: 400, 413, 414, 431, 501 or 505.
    pub status: u16,
    /// What was wrong, in a sentence, for the response body and the log.
    pub message: String,
}

impl HttpError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError { status, message: message.into() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        HttpError::new(400, message)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, response::reason_phrase(self.status), self.message)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HttpError {}

/// Moves bytes of `input` into `line` up to and including the first `\n`, taking at most
/// `max_bytes` in all. Returns how many bytes of `input` it took and whether the line is
/// complete, or `None` when the line would grow past `max_bytes` without ending.
pub(crate) fn take_line(line: &mut Vec<u8>, input: &[u8], max_bytes: usize) -> Option<(usize, bool)> {
    let room = max_bytes.saturating_sub(line.len());
    match input.iter().position(|&b| b == b'\n') {
        Some(i) if i < room => {
            line.extend_from_slice(&input[..=i]);
            Some((i + 1, true))
        }
        None if input.len() <= room => {
            line.extend_from_slice(input);
            Some((input.len(), false))
        }
        _ => None,
    }
}

/// A line without its `\n` or `\r\n` ending. Bare `\n` endings are accepted, as RFC 9112 §2.2
/// allows a recipient to.
pub(crate) fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `s` is an RFC 9110 token: what methods, header names and parameter names are made of.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits `Name: value` into the name and the value without surrounding whitespace.
pub(crate) fn split_header_line(line: &str) -> Result<(&str, &str), String> {
    if line.starts_with([' ', '\t']) {
        return Err(format!("folded header line {} (obsolete line folding is not supported)", quoted(line)));
    }
    let Some((name, value)) = line.split_once(':') else {
        return Err(format!("header line without a colon: {}", quoted(line)));
    };
    if !is_token(name) {
        return Err(format!("bad header name {}", quoted(name)));
    }
    Ok((name, value.trim_matches([' ', '\t'])))
}

/// Shows untrusted text in a message: in backticks, escaped, cut at 80 characters.
pub(crate) fn quoted(text: &str) -> String {
    quoted_bytes(text.as_bytes())
}

/// Like [`quoted`] for bytes that may not be text. Printable ASCII shows as itself, quotes
/// included, so that a message quoting a header reads like the header.
pub(crate) fn quoted_bytes(bytes: &[u8]) -> String {
    const SHOWN_MAX_BYTES: usize = 80;
    let mut out = String::from("`");
    for &b in &bytes[..bytes.len().min(SHOWN_MAX_BYTES)] {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b' '..=b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > SHOWN_MAX_BYTES {
        out.push('…');
    }
    out.push('`');
    out
}

/// Looks a header up by name, ignoring ASCII case; the first one wins.
pub(crate) fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_line_stops_after_the_newline_and_at_the_limit() {
        let mut line = Vec::new();
        assert_eq!(take_line(&mut line, b"ab", 8), Some((2, false)));
        assert_eq!(take_line(&mut line, b"c\r\nrest", 8), Some((3, true)));
        assert_eq!(line, b"abc\r\n");
        let mut long = Vec::new();
        assert_eq!(take_line(&mut long, b"abcdefgh", 8), Some((8, false)));
        assert_eq!(take_line(&mut long, b"\n", 8), None);
        assert_eq!(take_line(&mut Vec::new(), b"abcdefg\n", 8), Some((8, true)));
        assert_eq!(take_line(&mut Vec::new(), b"abcdefgh\n", 8), None);
    }

    #[test]
    fn header_lines_split_on_the_first_colon_and_lose_their_whitespace() {
        assert_eq!(split_header_line("Host: 127.0.0.1:80 "), Ok(("Host", "127.0.0.1:80")));
        assert_eq!(split_header_line("X-Empty:"), Ok(("X-Empty", "")));
        assert!(split_header_line(" folded").is_err());
        assert!(split_header_line("Bad Name: x").is_err());
        assert!(split_header_line("no colon").is_err());
    }

    #[test]
    fn quoted_text_escapes_only_what_does_not_print() {
        assert_eq!(quoted_bytes(b"name=\"a\"\r\n\x00\xff"), "`name=\"a\"\\r\\n\\x00\\xff`");
        assert_eq!(quoted(&"x".repeat(81)), format!("`{}…`", "x".repeat(80)));
    }
}
