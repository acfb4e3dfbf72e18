//! The virtual board's HTTP server, in this process (`board::spawn`), over real loopback
//! connections: what it answers to requests that are not what it expects.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use ota_firmware::board::{self, Options};
use serde_json::{Value, json};

/// A fresh directory under the target directory for one test's flash file.
fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("web-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts a board in this process, without a serial line; returns its HTTP address.
fn start(name: &str) -> String {
    let flash = temp_dir(name).join("flash").display().to_string();
    let mut options = Options::parse(["--flash".to_string(), flash]).unwrap();
    options.serial = false;
    options.app_slot_kib = 256;
    options.fs_slot_kib = 64;
    board::spawn(options).expect("the board starts").http.expect("the HTTP server is on")
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    // Bounds a read that would otherwise wait for ever if the server went silent.
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Sends `request` and reads the whole response (the server closes after it): status and body.
fn exchange(addr: &str, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> (u16, Vec<u8>) {
    let text = String::from_utf8_lossy(response);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{text:?}"));
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
    (status, response[head_end..].to_vec())
}

fn post_rpc(addr: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut request =
        format!("POST /rpc HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(body);
    exchange(addr, &request)
}

/// Regression: `POST /rpc` with a body that was not a frame (not JSON, nested past the parser's
/// depth, two frames in one body) got `200` and an empty body, as a notification does, so a
/// client could not tell its frame had been thrown away.
#[test]
fn post_rpc_with_a_body_that_is_not_a_frame_gets_400_and_an_error_frame() {
    let addr = start("not-a-frame");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep_frame = format!(r#"{{"id":1,"method":"Sys.GetInfo","params":{deep}}}"#);
    let cases: [(&str, &[u8]); 5] = [
        ("not JSON", b"{\"id\":1,\"method\":"),
        ("nested too deep", deep_frame.as_bytes()),
        ("two frames", br#"{"id":1,"method":"Sys.GetInfo"}{"id":2,"method":"Sys.GetInfo"}"#),
        ("not an object", b"[1,2]"),
        ("a response", br#"{"id":1,"result":{}}"#),
    ];
    for (name, body) in cases {
        let (status, reply) = post_rpc(&addr, body);
        assert_eq!(status, 400, "{name}: {}", String::from_utf8_lossy(&reply));
        let frame: Value =
            serde_json::from_slice(&reply).unwrap_or_else(|e| panic!("{name}: {e}: {reply:?}"));
        assert_eq!(frame["src"], json!("virtual-board"), "{name}: {frame}");
        assert_eq!(frame["error"]["code"], json!(400), "{name}: {frame}");
        let message = frame["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("bad request: "), "{name}: {frame}");
    }
    // A notification is a frame; it is still answered with nothing.
    assert_eq!(post_rpc(&addr, br#"{"method":"Sys.GetInfo"}"#), (200, Vec::new()));
}

/// Regression: the server took every connection and gave each a thread, without bound, so a
/// client opening connections could exhaust the process's threads and file descriptors.
/// Past `CONNECTIONS_MAX` open connections it now answers 503 and closes; a connection that ends
/// frees its place before the client sees it close.
#[test]
fn connections_past_the_cap_get_503_too_many_connections() {
    let addr = start("cap");
    // Held open without a request: each occupies a place until it closes.
    let mut held: Vec<TcpStream> = (0..board::web::CONNECTIONS_MAX).map(|_| connect(&addr)).collect();
    let (status, body) = exchange(&addr, b"GET /nope HTTP/1.1\r\n\r\n");
    assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (503, "Too many connections\r\n"));

    // One held connection finishes a request; once it has closed, its place is free again.
    let mut first = held.remove(0);
    first.write_all(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
    let mut response = Vec::new();
    first.read_to_end(&mut response).unwrap();
    assert_eq!(parse_response(&response).0, 404);
    assert_eq!(exchange(&addr, b"GET /nope HTTP/1.1\r\n\r\n").0, 404);
    drop(held);
}

/// The CPU time a process has used, user and system, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses: utime and stime are the 12th
    // and 13th of them.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Regression: when `accept` failed for want of a descriptor (EMFILE), the acceptor tried again
/// at once, spinning on a core until a connection closed. It now waits for one to close, and
/// then serves the connections that waited in the backlog.
#[test]
fn at_the_descriptor_limit_the_server_neither_spins_nor_goes_silent() {
    let dir = temp_dir("emfile");
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 24 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_virtual-board"))
        .arg("--flash")
        .arg(dir.join("flash"))
        .args(["--serial", "none", "--app-slot-kib", "256", "--fs-slot-kib", "64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("virtual-board starts");
    let mut addr = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(http) = line.strip_prefix("http=") {
            addr = http.to_string();
        } else if line == "ready" {
            break;
        }
    }
    assert!(!addr.is_empty(), "the board printed its address");

    // More connections than the 24 descriptors allow, fewer than the cap: the server accepts
    // until `accept` fails with EMFILE, and the rest wait in the backlog, `waiting` last.
    let held: Vec<TcpStream> = (0..40).map(|_| connect(&addr)).collect();
    let mut waiting = connect(&addr);
    waiting.write_all(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
    // Half a second in which no descriptor frees: a spinning acceptor burns most of it (50 ticks
    // on an idle core); a waiting one next to nothing.
    let before = cpu_ticks(child.id());
    waiting.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let early = waiting.read(&mut [0; 64]).map_err(|e| e.kind());
    let spent_ticks = cpu_ticks(child.id()) - before;
    assert!(matches!(early, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)), "served early: {early:?}");

    drop(held);
    waiting.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut response = Vec::new();
    let read = waiting.read_to_end(&mut response);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("the server answered once descriptors were free");
    assert_eq!(parse_response(&response).0, 404);
    assert!(spent_ticks < 10, "the server used {spent_ticks} ticks of CPU while waiting for a descriptor");
}
