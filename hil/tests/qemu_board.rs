//! The QEMU board end to end: `hil run --board boards/qemu.toml` on scenario files, with the
//! boot loader and the firmware of `firmware-under-test/qemu-virt/` on the emulated CPU.
//!
//! The seeds' HTTP update too: `hil up boards/qemu.toml` starts a provisioned board, and the seeds'
//! `curl` lines, verbatim but for the address, update and commit it over its virtio network device
//! (smoltcp, `ota_app::web`).
//!
//! Needs `qemu-system-riscv32`, `curl` and the two binaries
//! (`cargo build --release -p ota-port-qemu-virt --target riscv32imc-unknown-none-elf --bins`).
//! Without them the tests print why and pass, unless `HIL_REQUIRE_QEMU_BOARD=1` (CI sets it after
//! building them), which makes anything missing a failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use ota_hil::board::BoardInfo;
use ota_hil::board::config::{self, Backend};
use ota_hil::board::qemu::{self, Images};
use ota_hil::bundles;
use ota_hil::scenario::model::{Behaviour, BundleSource, BundleSpec};
use serde_json::Value;

const HIL: &str = env!("CARGO_BIN_EXE_hil");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether this machine can run the board; prints why not.
fn ready() -> bool {
    let required = std::env::var_os("HIL_REQUIRE_QEMU_BOARD").is_some_and(|v| v == "1");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let dir = target.join("riscv32imc-unknown-none-elf/release");
    let missing: Vec<String> = ["ota-qemu-boot", "ota-qemu-fw"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .chain(
            ["qemu-system-riscv32", "curl"]
                .into_iter()
                .filter(|&tool| Command::new(tool).arg("--version").output().is_err())
                .map(|tool| format!("{tool} on PATH")),
        )
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!required, "HIL_REQUIRE_QEMU_BOARD=1 but these are missing: {missing:?}");
    eprintln!(
        "qemu_board: skipped: missing {missing:?} (set HIL_REQUIRE_QEMU_BOARD=1 to make this a failure)"
    );
    false
}

fn hil_run(scenario: &str) -> (bool, String) {
    let output = Command::new(HIL)
        .args(["run", "--board", "boards/qemu.toml", "--no-logs", scenario])
        .current_dir(workspace())
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn the_commit_scenario_passes_on_the_emulated_cpu() {
    if !ready() {
        return;
    }
    let (ok, text) = hil_run("scenarios/commit.toml");
    assert!(ok, "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
fn a_scenario_that_pushes_over_http_passes_through_the_boards_network() {
    if !ready() {
        return;
    }
    let (ok, text) = hil_run("scenarios/commit_timeout_zero.toml");
    assert!(ok, "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// A board started by `hil up`; stopped (QEMU too) when dropped.
struct Up {
    hil: Child,
    qemu_pid: String,
    http: String,
}

impl Up {
    fn start() -> Up {
        let mut hil = Command::new(HIL)
            .args(["up", "boards/qemu.toml", "--version", "1.0"])
            .current_dir(workspace())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(hil.stdout.take().unwrap()).lines();
        let (mut http, mut qemu_pid) = (None, None);
        while http.is_none() || qemu_pid.is_none() {
            let line = lines.next().expect("hil up ended before printing http= and qemu_pid=").unwrap();
            if let Some(v) = line.strip_prefix("http=") {
                http = Some(v.to_string());
            }
            if let Some(v) = line.strip_prefix("qemu_pid=") {
                qemu_pid = Some(v.to_string());
            }
        }
        let up = Up { hil, qemu_pid: qemu_pid.unwrap(), http: http.unwrap() };
        // `hil up` prints its lines as the CPU starts: wait until the firmware answers HTTP, so
        // that connections reach it in the order they are made (QEMU's user network retries a
        // connection the guest did not answer yet, seconds later).
        let (ok, out, err) = sh(
            &std::env::temp_dir(),
            &format!(
                "curl -sf --retry 60 --retry-connrefused --retry-all-errors --max-time 10 http://{}/rpc/Sys.GetInfo",
                up.http
            ),
        );
        assert!(ok, "the board never answered HTTP: {out}\n{err}");
        up
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-9", &self.qemu_pid]).status();
        let _ = self.hil.kill();
        let _ = self.hil.wait();
    }
}

/// Runs a shell line in `dir`; its stdout, and stderr for the failure message.
fn sh(dir: &Path, line: &str) -> (bool, String, String) {
    let output = Command::new("sh").args(["-c", line]).current_dir(dir).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `fw.zip` of the built firmware, its descriptor patched to `version`, and to leave the commit
/// to the person (a healthy image commits itself at its first boot).
fn bundle(version: &str) -> Vec<u8> {
    // The board file's paths are relative to the workspace, where hil runs.
    std::env::set_current_dir(workspace()).unwrap();
    let board = config::load(Path::new("boards/qemu.toml")).unwrap();
    let Backend::Qemu(qemu_config) = board.backend else { panic!("boards/qemu.toml is not a QEMU board") };
    let (boot, fw) = qemu::find_images(&qemu_config).unwrap();
    let images = Images::load(&boot, &fw).unwrap();
    let layout = ota_app::partitions::layout();
    let info = BoardInfo {
        name: "qemu".into(),
        kind: "qemu".into(),
        platform: board.platform.clone(),
        app_slot_bytes: layout.app[0].size_bytes,
        fs_slot_bytes: layout.fs[0].size_bytes,
        app_image: Some(Arc::new(images.firmware.bytes.clone())),
    };
    let spec = BundleSpec {
        name: "app".into(),
        version: version.into(),
        build_id: format!("hil/{version}"),
        platform: None,
        behaviour: Behaviour::NeverCommits,
        app_bytes: images.firmware.bytes.len(),
        files: vec![("app.json".into(), format!("{{\"version\":\"{version}\"}}").into_bytes())],
        defect: None,
    };
    bundles::build(&BundleSource::Spec(spec), &info).unwrap().bytes
}

#[test]
fn the_seeds_curl_lines_update_and_commit_the_qemu_board() {
    if !ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hil-qemu-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fw.zip"), bundle("2.0")).unwrap();
    let up = Up::start();
    let ip_addr = &up.http;

    // The seeds' lines, verbatim but for IP_ADDR.
    let (ok, out, err) =
        sh(&dir, &format!("curl -v -F file=@fw.zip -F commit_timeout=300 http://{ip_addr}/update"));
    assert!(ok && out.contains("Update applied, finalizing"), "{out}\n{err}");
    // The board reboots into the new firmware on trial (100 ms of device time after the answer);
    // until then it still answers as 1.0, and while it reboots curl retries the connection.
    let info = format!(
        "curl -sf --retry 60 --retry-connrefused --retry-all-errors --max-time 10 http://{ip_addr}/rpc/Sys.GetInfo"
    );
    let mut seen = Vec::new();
    for _ in 0..200 {
        let (ok, out, err) = sh(&dir, &info);
        assert!(ok, "{out}\n{err}");
        let info: Value = serde_json::from_str(&out).unwrap();
        if info["fw_version"] == "2.0" {
            break;
        }
        seen.push(info);
    }
    assert!(seen.len() < 200, "the board never ran 2.0: {seen:?}");
    // The seeds' second line commits it.
    let (ok, out, err) = sh(&dir, &format!("curl http://{ip_addr}/update/commit"));
    assert!(ok && out == "Ok\r\n", "{out:?}\n{err}");
    let (ok, out, err) = sh(&dir, &format!("curl -sf http://{ip_addr}/rpc/OTA.GetBootState"));
    assert!(ok, "{out}\n{err}");
    let state: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&state["active_slot"], &state["is_committed"]),
        (&Value::from(1), &Value::from(true)),
        "{state}"
    );
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server on the host's loopback that answers each connection with the next of `replies` and
/// hands over each request head it read.
struct Script {
    port: u16,
    heads: std::sync::mpsc::Receiver<String>,
}

fn script(replies: Vec<String>) -> Script {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, heads) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for reply in replies {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    Script { port, heads }
}

#[test]
fn the_qemu_board_pulls_with_its_headers_follows_a_redirect_takes_304_and_polls() {
    if !ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hil-qemu-pull-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let up = Up::start();
    let ip_addr = &up.http;
    let wait = std::time::Duration::from_secs(60);

    // /update?url=: a redirect, then 304 (no update), over QEMU's user network to the host.
    let server = script(vec![
        "HTTP/1.1 302 Found\r\nLocation: /fw.zip\r\nContent-Length: 0\r\n\r\n".into(),
        "HTTP/1.1 304 Not Modified\r\n\r\n".into(),
    ]);
    let url = format!("http://10.0.2.2:{}/r", server.port);
    let (ok, out, err) = sh(&dir, &format!("curl -s 'http://{ip_addr}/update?url={url}'"));
    assert!(ok && out == "(1) Not Modified\r\n", "{out:?}\n{err}");
    let first = server.heads.recv_timeout(wait).unwrap();
    let second = server.heads.recv_timeout(wait).unwrap();
    assert!(first.starts_with("GET /r HTTP/1.1\r\n"), "{first}");
    assert!(second.starts_with("GET /fw.zip HTTP/1.1\r\n"), "{second}");
    for head in [&first, &second] {
        assert!(head.contains("X-MGOS-Device-ID: qemu-virt -\r\n"), "{head}");
        assert!(head.contains("X-MGOS-FW-Version: esp32c3 1.0 hil/1.0\r\n"), "{head}");
    }

    // Polling: update.url and update.interval from conf9.json.
    let server = script(vec!["HTTP/1.1 304 Not Modified\r\n\r\n".into()]);
    let conf9 = format!(r#"{{"update": {{"url": "http://10.0.2.2:{}/poll", "interval": 1}}}}"#, server.port);
    let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, conf9);
    let put = format!(
        r#"curl -sf -d '{{"filename": "conf9.json", "data": "{data}"}}' http://{ip_addr}/rpc/FS.Put"#
    );
    let (ok, out, err) = sh(&dir, &put);
    assert!(ok, "{out}\n{err}");
    let poll = server.heads.recv_timeout(wait).expect("the board polled update.url");
    assert!(poll.starts_with("GET /poll HTTP/1.1\r\n"), "{poll}");
    assert!(poll.contains("X-MGOS-FW-Version: esp32c3 1.0 hil/1.0\r\n"), "{poll}");
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One request on a fresh connection; the whole response (the device closes after it).
fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn a_fifth_connection_gets_503_and_a_cut_off_upload_changes_nothing_on_the_qemu_board() {
    use std::io::{Read, Write};
    if !ready() {
        return;
    }
    let bundle = bundle("2.0");
    let up = Up::start();
    let addr = up.http.as_str();

    // Five connections, each mid-request: four hold the four places and wait for their requests
    // to end; the one past them is answered at once.
    let mut streams: Vec<_> = (0..5)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(b"GET /rpc/Sys.GetInfo HTTP/1.1\r\nHost: x\r\n").unwrap();
            stream.set_read_timeout(Some(std::time::Duration::from_millis(100))).unwrap();
            stream
        })
        .collect();
    let mut answered = None;
    for _ in 0..300 {
        answered = streams.iter().position(|s| s.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0));
        if answered.is_some() {
            break;
        }
    }
    let mut refused_stream =
        streams.remove(answered.expect("no connection was answered before its request ended"));
    refused_stream.set_read_timeout(None).unwrap();
    let mut refused = String::new();
    refused_stream.read_to_string(&mut refused).unwrap();
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n")
            && refused.ends_with("Too many connections\r\n"),
        "{refused}"
    );
    // The others' requests end and are answered; closing them frees the places (a place stays
    // taken until the client closes too).
    for mut stream in streams {
        stream.set_read_timeout(None).unwrap();
        stream.write_all(b"\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    }

    // Half a bundle, then the client goes away: the update is aborted, slot 0 stays.
    let head = "--cut\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.zip\"\r\n\r\n";
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /update HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary=cut\r\nContent-Length: {}\r\n\r\n{head}",
        head.len() + bundle.len() + 64
    )
    .unwrap();
    stream.write_all(&bundle[..bundle.len() / 2]).unwrap();
    // The device has taken bytes of it once OTA.Status says an update runs.
    let mut status = String::new();
    for _ in 0..200 {
        status = get(addr, "/rpc/OTA.Status");
        if status.contains("\"state\":1") {
            break;
        }
    }
    assert!(status.contains("\"state\":1"), "{status}");
    drop(stream);
    for _ in 0..200 {
        status = get(addr, "/rpc/OTA.Status");
        if !status.contains("\"state\":1") {
            break;
        }
    }
    assert!(status.contains("the upload was cut off"), "{status}");
    let state = get(addr, "/rpc/OTA.GetBootState");
    assert!(
        state.ends_with(r#"{"active_slot":0,"commit_timeout":0,"is_committed":true,"revert_slot":-1}"#),
        "{state}"
    );
    let info = get(addr, "/rpc/Sys.GetInfo");
    assert!(info.contains(r#""fw_version":"1.0""#), "{info}");
}
