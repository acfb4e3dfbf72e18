//! The virtual board's HTTP server, in this process (`board::spawn`), over real loopback
//! connections: what it answers to requests that are not what it expects.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
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
