//! The pull client over a socket (`ota_firmware::net::PullClient` with `ota-proto`'s request and
//! response halves): each test runs a tiny server on 127.0.0.1 in a thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ota_firmware::net::PullClient;
use ota_proto::http::client::{
    CODE_CONNECT_FAILED, CODE_FAILED, DeviceIdentity, PullError, PullOutcome, REDIRECTS_MAX,
};

/// One scripted reply: pieces written with a pause between them, then the connection closes.
#[derive(Clone)]
struct Reply {
    pieces: Vec<Vec<u8>>,
    pause_ms: u64,
    /// After the pieces, send nothing more and keep the connection open until the client hangs
    /// up: a stalled server, whatever the client's timeout and however busy the machine.
    stall: bool,
}

fn reply(pieces: &[&[u8]]) -> Reply {
    Reply { pieces: pieces.iter().map(|p| p.to_vec()).collect(), pause_ms: 20, stall: false }
}

/// A loopback server that answers its n-th connection with the n-th reply and reports each
/// request head it read.
struct Server {
    addr: SocketAddr,
    requests: mpsc::Receiver<String>,
    thread: JoinHandle<()>,
}

impl Server {
    fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, requests) = mpsc::channel();
        let thread = thread::spawn(move || {
            for reply in replies {
                let (mut stream, _) = listener.accept().unwrap();
                stream.set_nodelay(true).unwrap();
                sender.send(read_head(&mut stream)).unwrap();
                for (i, piece) in reply.pieces.iter().enumerate() {
                    if i > 0 {
                        thread::sleep(Duration::from_millis(reply.pause_ms));
                    }
                    // The client may have hung up already (a refused body); that is its right.
                    if stream.write_all(piece).and_then(|()| stream.flush()).is_err() {
                        break;
                    }
                }
                if reply.stall {
                    // Until the client closes (end of file) or resets the connection.
                    let mut byte = [0];
                    while matches!(stream.read(&mut byte), Ok(1)) {}
                }
            }
        });
        Server { addr, requests, thread }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The request heads received, with the port replaced so that they snapshot.
    fn finish(self) -> Vec<String> {
        self.thread.join().unwrap();
        let port = self.addr.port().to_string();
        self.requests.try_iter().map(|r| r.replace(&port, "PORT")).collect()
    }
}

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn client() -> PullClient {
    let mut client = PullClient::new(DeviceIdentity {
        device_id: Some("esp32_0A1B2C".into()),
        mac: None,
        app: "demo".into(),
        platform: "host".into(),
        fw_version: "1.0.3".into(),
        fw_id: "20250102-120000".into(),
    });
    client.extra_headers = vec![("X-Fleet".into(), "lab".into())];
    client.connect_timeout_ms = 2_000;
    client.io_timeout_ms = 2_000;
    client
}

/// Pulls `url` and returns the outcome and the pieces the callback got.
fn pull(client: &PullClient, url: &str) -> (Result<PullOutcome, PullError>, Vec<Vec<u8>>) {
    let mut pieces = Vec::new();
    let outcome = client.get(url, |piece| {
        pieces.push(piece.to_vec());
        Ok(())
    });
    (outcome, pieces)
}

#[test]
fn a_200_body_reaches_the_callback_in_the_pieces_it_arrives_in() {
    let server = Server::start(vec![reply(&[
        b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfirst",
        b"-second",
        b"ignored bytes past Content-Length",
    ])]);
    let (outcome, pieces) = pull(&client(), &server.url("/fw.zip?v=1"));
    assert_eq!(outcome, Ok(PullOutcome::Done { bytes: 12 }));
    assert_eq!(pieces, [b"first".to_vec(), b"-second".to_vec()]);
    let requests = server.finish();
    insta::assert_snapshot!(requests[0]);
}

#[test]
fn the_body_is_handed_over_before_the_rest_has_been_sent() {
    // The server sends the second half only after the callback has seen the first.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/fw.zip", listener.local_addr().unwrap());
    let (first_seen, wait_for_first) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        read_head(&mut stream);
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nhalf").unwrap();
        wait_for_first.recv_timeout(Duration::from_secs(5)).expect("the callback saw the first half");
        stream.write_all(b"done").unwrap();
    });
    let mut got = Vec::new();
    let outcome = client().get(&url, |piece| {
        if got.is_empty() {
            first_seen.send(()).unwrap();
        }
        got.extend_from_slice(piece);
        Ok(())
    });
    assert_eq!(outcome, Ok(PullOutcome::Done { bytes: 8 }));
    assert_eq!(got, b"halfdone");
    server.join().unwrap();
}

#[test]
fn redirects_are_followed_relative_and_absolute() {
    let target = Server::start(vec![reply(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])]);
    let to_target = format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
        target.url("/b")
    );
    let first = Server::start(vec![
        reply(&[b"HTTP/1.1 302 Found\r\nLocation: other/fw.zip\r\n\r\n"]),
        reply(&[to_target.as_bytes()]),
    ]);
    let (outcome, pieces) = pull(&client(), &first.url("/dir/start"));
    assert_eq!(outcome, Ok(PullOutcome::Done { bytes: 2 }));
    assert_eq!(pieces.concat(), b"ok");
    let first_paths: Vec<String> =
        first.finish().iter().map(|r| r.lines().next().unwrap().to_string()).collect();
    assert_eq!(first_paths, ["GET /dir/start HTTP/1.1", "GET /dir/other/fw.zip HTTP/1.1"]);
    assert!(target.finish()[0].starts_with("GET /b HTTP/1.1\r\n"));
}

#[test]
fn more_than_five_redirects_is_an_error() {
    let hop = reply(&[b"HTTP/1.1 302 Found\r\nLocation: /again\r\n\r\n"]);
    let server = Server::start(vec![hop; REDIRECTS_MAX + 1]);
    let port = server.addr.port().to_string();
    let (outcome, pieces) = pull(&client(), &server.url("/start"));
    let error = outcome.unwrap_err();
    assert_eq!(error.code, CODE_FAILED);
    assert!(pieces.is_empty());
    assert_eq!(server.finish().len(), REDIRECTS_MAX + 1);
    insta::assert_snapshot!(error.message.replace(&port, "PORT"), @"Too many redirects: more than 5, the last from http://127.0.0.1:PORT/again");
}

/// Each reply that ends a pull, with what the pull returned.
#[test]
fn pull_outcomes_and_errors_by_reply() {
    let cases: [(&str, &[&[u8]]); 8] = [
        ("304", &[b"HTTP/1.1 304 Not Modified\r\n\r\n"]),
        ("404", &[b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"]),
        ("302 without Location", &[b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"]),
        ("chunked", &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]),
        ("no Content-Length", &[b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello"]),
        ("short body", &[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"hello"]),
        ("empty body", &[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]),
        ("garbage status line", &[b"SSH-2.0-OpenSSH\r\n\r\n"]),
    ];
    let mut report = String::new();
    for (name, pieces) in cases {
        let server = Server::start(vec![reply(pieces)]);
        let (outcome, body) = pull(&client(), &server.url("/fw.zip"));
        let port = server.addr.port().to_string();
        server.finish();
        let shown = match outcome {
            Ok(outcome) => format!("{outcome:?}, {} body bytes", body.concat().len()),
            Err(error) => error.to_string().replace(&port, "PORT"),
        };
        report.push_str(&format!("{name}: {shown}\n"));
    }
    insta::assert_snapshot!(report);
}

#[test]
fn a_refusing_callback_stops_the_pull_with_its_message() {
    let server = Server::start(vec![reply(&[b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nPK\x03\x04"])]);
    let outcome = client().get(&server.url("/fw.zip"), |_| Err("Malformed archive (invalid header)".into()));
    server.finish();
    assert_eq!(
        outcome,
        Err(PullError { code: CODE_FAILED, message: "Malformed archive (invalid header)".into() })
    );
}

#[test]
fn a_silent_server_times_out() {
    let mut client = client();
    // The server stalls until the client gives up, so only the head's arrival (microseconds on
    // loopback) races the timeout; before, a 600 ms pause raced a 100 ms timeout and a loaded
    // machine could see either.
    client.io_timeout_ms = 1000;
    let stall = Reply {
        pieces: vec![b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n".to_vec()],
        pause_ms: 0,
        stall: true,
    };
    let server = Server::start(vec![stall]);
    let (outcome, _) = pull(&client, &server.url("/fw.zip"));
    server.finish();
    let message = "Update failed: no data for 1000 ms after 0 of 4 body bytes".to_string();
    assert_eq!(outcome, Err(PullError { code: CODE_FAILED, message }));
}

#[test]
fn connection_failures_are_code_minus_10() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/fw.zip", closed.local_addr().unwrap());
    drop(closed);
    let (refused, _) = pull(&client(), &closed_url);
    let refused = refused.unwrap_err();
    assert_eq!(refused.code, CODE_CONNECT_FAILED);
    assert!(
        refused.message.starts_with(&format!("Failed to connect to {closed_url} (")),
        "{}",
        refused.message
    );

    let mut report = String::new();
    for url in [
        "https://example.com/fw.zip",
        "ftp://example.com/fw.zip",
        "http:///fw.zip",
        "http://h:99999/",
        "fw.zip",
    ] {
        let (outcome, _) = pull(&client(), url);
        report.push_str(&format!("{url}: {}\n", outcome.unwrap_err()));
    }
    insta::assert_snapshot!(report);
}
