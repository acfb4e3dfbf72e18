//! The pull client's socket loop (§6.2 of the reference): connect, send the request
//! `ota_proto::http::client` builds, read the socket into its `ResponseParser`, follow redirects.
//! The protocol is all in `ota-proto`; this is the host port's part, as a board's firmware has its
//! own over its network stack.

use std::fmt::Display;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ota_proto::http::client::{
    self, DeviceIdentity, HttpUrl, Progress, PullError, PullOutcome, REDIRECTS_MAX, Reply, ResponseParser,
};

/// A blocking HTTP client for pulls over `std::net`. See `ota_proto::http::client` for what it
/// sends and how each reply ends a pull.
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
        client::request_head(&self.identity, &self.extra_headers, url)
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
        let mut parser = ResponseParser::new(url);
        let mut buf = vec![0; client::READ_PIECE_MAX_BYTES.max(client::HEAD_READ_MAX_BYTES)];
        loop {
            let want = parser.read_size_max().min(buf.len());
            let n = self.read(&mut stream, &mut buf[..want], parser.waiting_for())?;
            if n == 0 {
                return Err(parser.closed());
            }
            if let Progress::Reply(reply) = parser.feed(&buf[..n], on_body)? {
                return Ok(reply);
            }
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

    /// One read, retried when interrupted; a timeout or an error says `where_` it happened.
    fn read(&self, stream: &mut TcpStream, buf: &mut [u8], where_: impl Display) -> Result<usize, PullError> {
        loop {
            match stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(PullError::failed(format!(
                        "Update failed: no data for {} ms {where_}",
                        self.io_timeout_ms
                    )));
                }
                Err(e) => return Err(PullError::failed(format!("Update failed: read error {where_}: {e}"))),
            }
        }
    }
}

fn millis(ms: u64) -> Duration {
    // A zero timeout means "none" to the OS and is refused by std; wait at least 1 ms.
    Duration::from_millis(ms.max(1))
}
