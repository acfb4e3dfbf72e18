//! `hil call` and `hil ota` over MQTT, as `mos --port mqtt://HOST:PORT/DEVICE_ID`, against a real
//! Mosquitto (`ota_hil::broker::Broker`, Debian's `mosquitto`) and a `virtual-board` process with
//! MQTT in its `conf9.json`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use ota_bundle::Bundle;
use ota_hil::broker::Broker;
use ota_sim::image::{Behaviour, Image};
use serde_json::{Value, json};

const HIL: &str = env!("CARGO_BIN_EXE_hil");
/// How long the test waits for a line it expects; it bounds a broken test only.
const WAIT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/debug/virtual-board`, built now.
fn virtual_board() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let _ = Command::new(cargo)
        .args(["build", "-q", "-p", "ota-firmware", "--bin", "virtual-board"])
        .current_dir(workspace())
        .status();
    let binary = target.join("debug").join("virtual-board");
    assert!(binary.is_file(), "no {} to run", binary.display());
    binary
}

fn bundle(version: &str, behaviour: Behaviour, app_bytes: usize) -> Vec<u8> {
    let image = Image::new(version, app_bytes).behaviour(behaviour);
    Bundle::new("app", "esp32").version(version).build_id(version).app(image.bytes()).build()
}

fn hil(args: &[&str], dir: &Path) -> Output {
    Command::new(HIL).args(args).current_dir(dir).output().expect("hil runs")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A virtual board whose stderr (console and events) the test reads line by line.
struct Device {
    child: Child,
    console: Receiver<String>,
}

impl Device {
    fn start(dir: &Path, device_id: &str, broker: &Broker) -> Device {
        std::fs::write(dir.join("v1.zip"), bundle("1.0.0", Behaviour::Healthy, 64 * 1024)).unwrap();
        let conf = json!({"device": {"id": device_id}, "mqtt": {"enable": true, "server": broker.server()}});
        std::fs::write(dir.join("conf9.json"), conf.to_string()).unwrap();
        let mut child = Command::new(virtual_board())
            .args(["--flash", dir.join("flash.bin").to_str().unwrap(), "--platform", "esp32"])
            .args(["--provision", dir.join("v1.zip").to_str().unwrap(), "--serial", "none"])
            .args(["--http", "none", "--conf9", dir.join("conf9.json").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, console) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let device = Device { child, console };
        device.wait_line(&format!("mqtt: subscribed as {device_id}"));
        device
    }

    fn wait_line(&self, text: &str) {
        loop {
            let line = self.console.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no line {text:?}"));
            if line.contains(text) {
                return;
            }
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hil_call_and_hil_ota_over_mqtt() {
    let broker = Broker::start().unwrap();
    let dir = std::env::temp_dir().join(format!("hil-test-mqtt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let device = Device::start(&dir, "hil-mqtt-1", &broker);
    let port = format!("mqtt://{}/hil-mqtt-1", broker.server());

    let info = hil(&["call", "Sys.GetInfo", "--port", &port], &dir);
    assert_eq!(info.status.code(), Some(0), "{}", text(&info));
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!((info["fw_version"].clone(), info["id"].clone()), (json!("1.0.0"), json!("hil-mqtt-1")));

    std::fs::write(dir.join("v2.zip"), bundle("2.0.0", Behaviour::NeverCommits, 256 * 1024)).unwrap();
    let started = Instant::now();
    let ota = hil(&["ota", "v2.zip", "--port", &port, "--commit-timeout", "300"], &dir);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(ota.status.code(), Some(0), "{}", text(&ota));
    println!("hil ota over MQTT: 256 KiB app in {seconds:.2} s");
    // The device reboots into 2.0.0, reconnects, and answers from the new image.
    device.wait_line("mqtt: subscribed as hil-mqtt-1");
    let state = hil(&["call", "OTA.GetBootState", "--port", &port], &dir);
    let state: Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!((state["active_slot"].clone(), state["is_committed"].clone()), (json!(1), json!(false)));
    let commit = hil(&["call", "OTA.Commit", "--port", &port], &dir);
    assert_eq!(commit.status.code(), Some(0), "{}", text(&commit));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_port_with_no_broker_behind_it_is_a_transport_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir();
    let out = hil(&["call", "Sys.GetInfo", "--port", &format!("mqtt://127.0.0.1:{closed}/dev")], &dir);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"), "{}", text(&out));
    let bad = hil(&["call", "Sys.GetInfo", "--port", "mqtt://127.0.0.1:1883"], &dir);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("mqtt://HOST[:PORT]/DEVICE_ID"), "{}", text(&bad));
}

#[test]
fn the_shadow_scenarios_pass_on_a_fleet_with_its_own_broker() {
    // Builds the board binary the board file names (next to hil).
    let _ = virtual_board();
    let dir = std::env::temp_dir();
    let scenarios = workspace().join("scenarios");
    let board = workspace().join("boards/virtual-mqtt.toml");
    let run = |name: &str| scenarios.join(name).display().to_string();
    let out = hil(
        &[
            "run",
            &run("shadow_fleet.toml"),
            &run("shadow_missed_commit.toml"),
            &run("shadow_bad_input.toml"),
            "--board",
            board.to_str().unwrap(),
            "--no-logs",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 passed, 0 failed"), "{}", text(&out));
}
