//! The `virtual-board` process, driven as people and tools drive a Mongoose OS device: the
//! `curl` commands of the issue verbatim, and RPC over its pseudo-terminal in Mongoose OS's
//! framing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ota_app::image::{Behaviour, Image};
use ota_bundle::Bundle;
use serde_json::{Value, json};

struct Board {
    child: Child,
    serial: String,
    http: String,
    dir: PathBuf,
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vb-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bundle(version: &str, behaviour: Option<Behaviour>) -> Vec<u8> {
    let app = match behaviour {
        Some(b) => Image::new(version, 40_000).behaviour(b).bytes(),
        None => (0..40_000u32).map(|i| (i as u8) ^ version.as_bytes()[0]).collect(),
    };
    let fs = ota_lfs::build_image(64 * 1024, 4096, &[("app.json", version.as_bytes())]);
    Bundle::new("fw", "host").version(version).build_id(&format!("b-{version}")).app(app).fs(fs).build()
}

/// Starts the board on `dir/flash`, with extra arguments, and waits for `ready`.
fn start(dir: &Path, extra: &[&str]) -> Board {
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtual-board"))
        .arg("--flash")
        .arg(dir.join("flash"))
        .args(["--app-slot-kib", "256", "--fs-slot-kib", "64"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("virtual-board starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut serial, mut http) = (String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(s) = line.strip_prefix("serial=") {
            serial = s.to_string();
        } else if let Some(h) = line.strip_prefix("http=") {
            http = h.to_string();
        } else if line == "ready" {
            break;
        }
    }
    // Keep draining stdout (reboot lines) so the board never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    assert!(!serial.is_empty() && !http.is_empty(), "the board printed its ports");
    Board { child, serial, http, dir: dir.to_path_buf() }
}

fn provisioned(name: &str) -> Board {
    let dir = temp_dir(name);
    std::fs::write(dir.join("v1.zip"), bundle("1.0.0", None)).unwrap();
    let v1 = dir.join("v1.zip");
    start(&dir, &["--provision", v1.to_str().unwrap()])
}

fn curl(dir: &Path, args: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("curl -s {args}"))
        .current_dir(dir)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rpc_http(board: &Board, method: &str, params: Value) -> Value {
    let out = curl(&board.dir, &format!("http://{}/rpc/{method} -d '{params}'", board.http));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: {e}: {out:?}"))
}

/// Waits until the device answers with `version` running (after the reboot into it).
fn wait_for_version(board: &Board, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = format!("\"fw_version\":\"{version}\"");
    while Instant::now() < deadline {
        if curl(&board.dir, &format!("http://{}/rpc/Sys.GetInfo", board.http)).contains(&want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the device did not run {version} within 10 s");
}

#[test]
fn the_curl_commands_of_mongoose_os_work_verbatim() {
    let board = provisioned("curl");
    std::fs::write(board.dir.join("fw.zip"), bundle("2.0.0", None)).unwrap();
    let ip_addr = &board.http;
    let push =
        curl(&board.dir, &format!("-v -F file=@fw.zip -F commit_timeout=300 http://{ip_addr}/update 2>&1"));
    assert!(push.contains("< HTTP/1.1 200 OK") && push.contains("Update applied, finalizing"), "{push}");
    wait_for_version(&board, "2.0.0");
    let state = rpc_http(&board, "OTA.GetBootState", json!({}));
    assert_eq!(
        state,
        json!({"active_slot": 1, "is_committed": false, "revert_slot": 0, "commit_timeout": 300})
    );
    assert_eq!(curl(&board.dir, &format!("http://{ip_addr}/update/commit")), "Ok\r\n");
    assert_eq!(rpc_http(&board, "OTA.GetBootState", json!({}))["is_committed"], true);
    assert_eq!(
        curl(&board.dir, &format!("http://{ip_addr}/update/commit")),
        "Error\r\n",
        "already committed"
    );
    assert_eq!(rpc_http(&board, "Sys.GetInfo", json!({}))["fw_version"], "2.0.0");
}

#[test]
fn a_bad_upload_is_refused_and_changes_nothing() {
    let board = provisioned("bad-upload");
    let before = rpc_http(&board, "OTA.GetBootState", json!({}));
    std::fs::write(board.dir.join("bad.zip"), b"<html>not a zip</html>").unwrap();
    let out = curl(&board.dir, &format!("-i -F file=@bad.zip http://{}/update", board.http));
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("Malformed archive (invalid file header)"), "{out}");
    let out = curl(
        &board.dir,
        &format!(
            "-i -H 'Content-Type: multipart/form-data; boundary=x' --data-binary 'garbage' http://{}/update",
            board.http
        ),
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(rpc_http(&board, "OTA.GetBootState", json!({})), before);
    let out = curl(&board.dir, &format!("-i http://{}/update", board.http));
    assert!(out.contains("400") && out.contains("Update URL not specified and none is configured."), "{out}");
    let out = curl(&board.dir, &format!("-i http://{}/rpc/No.Such", board.http));
    assert!(out.starts_with("HTTP/1.1 404") && out.contains("No handler for No.Such"), "{out}");
}

/// A pty client that speaks Mongoose OS's framing: CRC-suffixed lines, or the legacy wrapper.
struct Pty {
    file: std::fs::File,
    pending: Vec<u8>,
}

impl Pty {
    fn open(path: &str) -> Pty {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc_o_noctty())
            .open(path)
            .unwrap();
        let mut pty = Pty { file, pending: Vec::new() };
        pty.raw();
        pty
    }

    fn raw(&mut self) {
        // stty on the device side: raw, no echo, so frames pass through untouched.
        let status = Command::new("stty").arg("-F").arg(pty_path(&self.file)).args(["raw", "-echo"]).status();
        assert!(status.is_ok_and(|s| s.success()), "stty sets the pty raw");
    }

    fn send(&mut self, bytes: &[u8]) {
        self.file.write_all(bytes).unwrap();
    }

    /// Reads until a line that contains `needle`, skipping console lines; returns that line.
    fn read_line_with(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        loop {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                if line.contains(needle) {
                    return line;
                }
            }
            assert!(Instant::now() < deadline, "no line with {needle:?} within 10 s");
            let n = self.file.read(&mut buf).unwrap();
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

fn libc_o_noctty() -> i32 {
    0o400
}

fn pty_path(file: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap()
}

fn crc(json: &str) -> String {
    format!("{:08x}", crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(json.as_bytes()))
}

#[test]
fn rpc_over_the_serial_line_speaks_mongoose_framing() {
    let board = provisioned("serial");
    let mut pty = Pty::open(&board.serial);
    // mos's handshake, then a request in the legacy wrapper with a CRC.
    pty.send(b"\"\"\"\x04\"\"\"\n\n");
    let request = r#"{"id":5,"src":"mos","method":"Sys.GetInfo"}"#;
    pty.send(format!("\n\"\"\"{request}{}\"\"\"\n", crc(request)).as_bytes());
    let reply = pty.read_line_with(r#""id":5"#);
    let body = reply.trim_start_matches("\"\"\"").split("}\"\"\"").next().unwrap().to_string();
    assert!(reply.starts_with("\"\"\"{") && reply.ends_with("\"\"\""), "replied in the wrapper: {reply}");
    assert!(body.contains(r#""fw_version":"1.0.0""#), "{reply}");
    // A plain line with a bad CRC is dropped; the next good one is answered.
    pty.send(br#"{"id":6,"src":"mos","method":"OTA.Status"}deadbeef"#);
    pty.send(b"\n");
    let request = r#"{"id":"seven","src":"mos","method":"OTA.GetBootState"}"#;
    pty.send(format!("junk from a console line\n{request}{}\n", crc(request)).as_bytes());
    let reply = pty.read_line_with(r#""id":"seven""#);
    assert!(reply.contains(r#""is_committed":true"#), "{reply}");
    assert!(!reply.contains(r#""id":6"#));
}

#[test]
fn an_update_over_serial_rpc_with_retries_reaches_the_new_firmware() {
    let board = provisioned("serial-update");
    let mut pty = Pty::open(&board.serial);
    let zip = bundle("2.0.0", Some(Behaviour::Healthy));
    let mut id = 0;
    let mut call = |pty: &mut Pty, method: &str, params: Value| -> String {
        id += 1;
        let request = json!({"id": id, "src": "test", "method": method, "params": params}).to_string();
        pty.send(format!("{request}{}\n", crc(&request)).as_bytes());
        pty.read_line_with(&format!("\"id\":{id},"))
    };
    let begin =
        call(&mut pty, "OTA.Begin", json!({"timeout": 600, "commit_timeout": 300, "size": zip.len()}));
    assert!(begin.contains(r#""result":null"#), "{begin}");
    use base64::Engine as _;
    for (i, chunk) in zip.chunks(512).enumerate() {
        let data = base64::engine::general_purpose::STANDARD.encode(chunk);
        let params = json!({"offset": i * 512, "data": data});
        assert!(call(&mut pty, "OTA.Write", params.clone()).contains("\"result\""));
        if i == 3 {
            // A retry with the same offset is acknowledged and not applied twice.
            assert!(call(&mut pty, "OTA.Write", params).contains("\"result\""));
        }
    }
    let end = call(&mut pty, "OTA.End", json!({}));
    assert!(end.contains("Update applied, finalizing"), "{end}");
    wait_for_version(&board, "2.0.0");
    let info = rpc_http(&board, "Sys.GetInfo", json!({}));
    assert_eq!((info["fw_version"].clone(), info["ota_slot"].clone()), (json!("2.0.0"), json!(1)));
    assert_eq!(
        rpc_http(&board, "OTA.GetBootState", json!({}))["is_committed"],
        true,
        "a healthy image commits itself"
    );
}

#[test]
fn a_power_cut_in_the_middle_of_a_flash_operation_leaves_a_device_that_boots() {
    let board = provisioned("power-cut");
    let dir = board.dir.clone();
    drop(board);
    // Restart with a cut armed in the middle of the update's tenth flash operation.
    std::fs::write(dir.join("fw.zip"), bundle("2.0.0", None)).unwrap();
    let board = start(&dir, &["--power-cut-after-ops", "10"]);
    let out = curl(&dir, &format!("-F file=@fw.zip http://{}/update", board.http));
    assert!(!out.contains("Update applied"), "the process died mid-update: {out:?}");
    let mut board = board;
    let status = board.child.wait().unwrap();
    assert!(!status.success(), "the process died: {status}");
    // Power on: the same flash file, a torn write in it.
    let board = start(&dir, &[]);
    let info = rpc_http(&board, "Sys.GetInfo", json!({}));
    assert_eq!(info["fw_version"], "1.0.0", "the old firmware runs");
    let out = curl(&dir, &format!("-F file=@fw.zip -F commit_timeout=60 http://{}/update", board.http));
    assert!(out.contains("Update applied, finalizing"), "the update then succeeds: {out}");
}

/// A server on loopback that answers one request with `response`; the thread returns the
/// request's head.
fn serve_once(response: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/fw.zip", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        stream.write_all(&response).unwrap();
        String::from_utf8(head).unwrap()
    });
    (url, server)
}

#[test]
fn pull_from_a_url_with_the_device_headers() {
    let board = provisioned("pull");
    let zip = bundle("2.0.0", Some(Behaviour::Healthy));
    let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", zip.len()).into_bytes();
    response.extend_from_slice(&zip);
    let (url, server) = serve_once(response);
    let reply = rpc_http(&board, "OTA.Update", json!({"url": url, "commit_timeout": 300}));
    assert_eq!(reply, json!({"state": 3, "msg": "Update applied, finalizing"}));
    let head = server.join().unwrap();
    assert!(head.contains("X-MGOS-Device-ID: virtual-board -"), "{head}");
    assert!(head.contains("X-MGOS-FW-Version: host 1.0.0 b-1.0.0"), "{head}");
    wait_for_version(&board, "2.0.0");
    assert_eq!(rpc_http(&board, "Sys.GetInfo", json!({}))["fw_version"], "2.0.0");
}

#[test]
fn polling_from_conf9_pulls_with_the_device_headers_and_a_304_changes_nothing() {
    let board = provisioned("poll");
    let (url, server) = serve_once(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n".to_vec());
    use base64::Engine as _;
    let conf = json!({"device": {"id": "site-7"}, "update": {"url": url, "interval": 1}}).to_string();
    let data = base64::engine::general_purpose::STANDARD.encode(conf);
    rpc_http(&board, "FS.Put", json!({"filename": "conf9.json", "data": data}));
    let head = server.join().unwrap();
    assert!(head.starts_with("GET /fw.zip HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("X-MGOS-Device-ID: site-7 -"), "{head}");
    assert!(head.contains("X-MGOS-FW-Version: host 1.0.0 b-1.0.0"), "{head}");
    let status = rpc_http(&board, "OTA.Status", json!({}));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = status;
    while status["msg"] != "Not Modified" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        status = rpc_http(&board, "OTA.Status", json!({}));
    }
    assert_eq!((status["state"].clone(), status["msg"].clone()), (json!(0), json!("Not Modified")));
    assert_eq!(rpc_http(&board, "Sys.GetInfo", json!({}))["fw_version"], "1.0.0");
}

/// `virtual-board --help` printed the usage as an error and exited 2.
#[test]
fn virtual_board_help_is_not_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_virtual-board")).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: virtual-board --flash FILE"));
}

/// A failed `--provision` left a flash file behind, which the next start booted as a brick.
#[test]
fn a_failed_provision_leaves_no_flash_file_behind() {
    let dir = temp_dir("failed-provision");
    std::fs::write(dir.join("bad.zip"), b"<html>not a bundle</html>").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_virtual-board"))
        .arg("--flash")
        .arg(dir.join("flash"))
        .args(["--provision", dir.join("bad.zip").to_str().unwrap(), "--serial", "none", "--http", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("provisioning") && stderr.contains("no flash file was left behind"), "{stderr}");
    assert!(!dir.join("flash").exists());
}

/// Calls `method` over `POST /rpc/<method>` and returns the HTTP status and the body.
fn rpc_status(board: &Board, method: &str, params: &str) -> String {
    curl(&board.dir, &format!("-w ' %{{http_code}}' http://{}/rpc/{method} -d '{params}'", board.http))
}

/// With the board's clock frozen, lets `ms` of device time pass (`Board.Clock`).
fn advance(board: &Board, ms: u64) {
    let reply = rpc_http(board, "Board.Clock", json!({ "advance_ms": ms }));
    assert_eq!(reply["frozen"], true, "{reply}");
}

/// `Sys.Reboot {"delay_ms": 18446744073709551615}` over serial killed the serial thread; over
/// HTTP it killed the timer thread. Now it is refused with the bound, and the board answers.
#[test]
fn sys_reboot_with_a_delay_that_overflows_is_refused_and_the_board_keeps_answering() {
    let board = provisioned("reboot-overflow");
    let refused = rpc_status(&board, "Sys.Reboot", r#"{"delay_ms": 18446744073709551615}"#);
    assert!(
        refused.contains("delay_ms must be at most 604800000 (one week); no reboot scheduled"),
        "{refused}"
    );
    let refused = rpc_status(&board, "OTA.Begin", r#"{"timeout": 18446744073709551}"#);
    assert!(refused.contains("timeout must be at most 604800 s"), "{refused}");
    assert!(rpc_http(&board, "Sys.GetInfo", json!({}))["fw_version"] == "1.0.0");
}

/// `"update": {"interval": 18446744073709551615}` in conf9.json killed the timer thread at every
/// boot, also after a power cycle: the poll's due time overflowed.
#[test]
fn an_update_interval_that_overflows_in_conf9_leaves_the_timers_running() {
    let dir = temp_dir("interval-overflow");
    std::fs::write(dir.join("v1.zip"), bundle("1.0.0", None)).unwrap();
    let v1 = dir.join("v1.zip");
    let board = start(&dir, &["--provision", v1.to_str().unwrap(), "--clock-frozen"]);
    let conf = r#"{"update": {"url": "http://127.0.0.1:9/fw.zip", "interval": 18446744073709551615}}"#;
    let put = rpc_http(&board, "FS.Put", json!({"filename": "conf9.json", "data": base64(conf.as_bytes())}));
    assert_eq!(put, Value::Null);
    // The timers run with the conf in force, through a reboot and a day of device time.
    assert_eq!(rpc_http(&board, "Sys.Reboot", json!({"delay_ms": 0})), Value::Null);
    advance(&board, 0);
    advance(&board, 24 * 3600 * 1000);
    assert_eq!(rpc_http(&board, "Sys.GetInfo", json!({}))["fw_version"], "1.0.0");
    let events = rpc_http(&board, "Sys.Events", json!({}));
    let kinds: Vec<&str> =
        events["events"].as_array().unwrap().iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["phase", "boot", "running"], "a boot, and no pull started: {events}");
}

/// The seeds' push without `-F commit_timeout=…` (a timeout of 0) of a 2.0.0 that crashes at
/// boot: the running 1.0.0 committed the new record before it rebooted, and the board was
/// bricked ("8 boots in a row"). Now the crash rolls back to 1.0.0, committed.
#[test]
fn curl_without_a_commit_timeout_of_an_image_that_crashes_rolls_back_instead_of_bricking() {
    let dir = temp_dir("timeout-zero");
    std::fs::write(dir.join("v1.zip"), bundle("1.0.0", Some(Behaviour::Healthy))).unwrap();
    let v1 = dir.join("v1.zip");
    let board = start(&dir, &["--provision", v1.to_str().unwrap(), "--clock-frozen"]);
    std::fs::write(dir.join("fw.zip"), bundle("2.0.0", Some(Behaviour::CrashesAtBoot))).unwrap();
    let push = curl(&dir, &format!("-F file=@fw.zip http://{}/update", board.http));
    assert_eq!(push.trim(), "Update applied, finalizing");
    let state = rpc_http(&board, "OTA.GetBootState", json!({}));
    assert_eq!(state["is_committed"], true, "before the reboot 1.0.0 runs, committed: {state}");
    assert_eq!(state["active_slot"], 0, "{state}");
    advance(&board, 100);
    let state = rpc_http(&board, "OTA.GetBootState", json!({}));
    assert_eq!(
        state,
        json!({"active_slot": 0, "is_committed": true, "revert_slot": -1, "commit_timeout": 0})
    );
    let events = rpc_http(&board, "Sys.Events", json!({}));
    let kinds: Vec<&str> =
        events["events"].as_array().unwrap().iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(!kinds.contains(&"bricked"), "{kinds:?}");
    assert_eq!(rpc_http(&board, "Sys.GetInfo", json!({}))["fw_version"], "1.0.0");
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}
