//! The virtual board end to end: the `virtual-board` process of `firmware-under-test/`, driven by
//! the `hil` binary over a real pty and real loopback HTTP. `hil run` runs the scenario files on
//! it; `hil call` and `hil ota` talk to a process the test starts itself.
//!
//! The tests build `virtual-board` first (`cargo build -p ota-firmware --bin virtual-board`,
//! quick when it is up to date) and skip, with a printed line, when there is none to run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ota_bundle::Bundle;
use ota_sim::image::{Behaviour, Image};
use serde_json::Value;

const HIL: &str = env!("CARGO_BIN_EXE_hil");

/// One device test at a time: the board's clock runs 100 times as fast as the wall clock, so the
/// scenarios' one-second margins are 10 ms of wall time, which two tests running side by side on
/// a two-core machine can eat.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/debug/virtual-board`, built now. A test that cannot find it fails: it never passes by
/// running nothing.
fn virtual_board() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let binary = target.join("debug").join("virtual-board");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "-q", "-p", "ota-firmware", "--bin", "virtual-board"])
        .current_dir(workspace())
        .status();
    if !matches!(built, Ok(s) if s.success()) {
        eprintln!("virtual_board: `cargo build -p ota-firmware --bin virtual-board` failed ({built:?})");
    }
    assert!(binary.is_file(), "no {} to run: build it with `cargo build -p ota-firmware`", binary.display());
    binary
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

/// A temporary folder, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("hil-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bundle as the runner builds them: a simulated image and no fs part.
fn bundle(version: &str, behaviour: Behaviour, app_bytes: usize) -> Vec<u8> {
    let image = Image::new(version, app_bytes).behaviour(behaviour);
    Bundle::new("app", "esp32").version(version).build_id(version).app(image.bytes()).build()
}

/// Runs `hil run` on the virtual board with a JSON report; the report.
fn run_scenarios(dir: &Path, paths: &[&str]) -> (Output, Value) {
    run_scenarios_on(&workspace().join("boards/virtual.toml"), dir, paths)
}

fn run_scenarios_on(board: &Path, dir: &Path, paths: &[&str]) -> (Output, Value) {
    let json = dir.join("report.json");
    let mut args =
        vec!["run", "--board", board.to_str().unwrap(), "--no-logs", "--json", json.to_str().unwrap()];
    args.extend(paths);
    let output = hil(&args, dir);
    let report =
        std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no report ({e}):\n{}", text(&output)));
    (output, serde_json::from_str(&report).unwrap())
}

/// Every scenario, `power_loss.toml` and `commit_timeout_zero.toml` included, passes on the
/// virtual board at time scales 1 and 100; only the exhaustive sweep is skipped, for a reason.
#[test]
fn every_scenario_passes_or_is_skipped_for_a_capability() {
    let _one = one_at_a_time();
    virtual_board();
    for time_scale in [1, 100] {
        let dir = TempDir::new(&format!("scenarios-{time_scale}"));
        let board = dir.0.join("virtual.toml");
        let config = std::fs::read_to_string(workspace().join("boards/virtual.toml")).unwrap();
        std::fs::write(&board, config.replace("time_scale = 100", &format!("time_scale = {time_scale}")))
            .unwrap();
        every_scenario_on(&board, &dir.0);
    }
}

fn every_scenario_on(board: &Path, dir: &Path) {
    let scenarios = workspace().join("scenarios");
    let (output, report) = run_scenarios_on(board, dir, &[scenarios.to_str().unwrap()]);
    let mut wrong = Vec::new();
    for trial in report["trials"].as_array().unwrap() {
        let (name, outcome, message) = (&trial["scenario"], &trial["outcome"], &trial["message"]);
        let capability = message
            .as_str()
            .is_some_and(|m| m.contains("cannot") || m.contains("has no") || m.contains("device(s)"));
        match outcome.as_str() {
            Some("passed") => {}
            Some("skipped") if capability => {}
            _ => wrong.push(format!("{name}: {outcome} {message}")),
        }
    }
    assert!(wrong.is_empty(), "{}\n\n{}", wrong.join("\n"), text(&output));
    // The shadow scenarios need a broker and a fleet (boards/virtual-mqtt.toml, tests/mqtt.rs).
    let shadow = |t: &&Value| t["file"].as_str().is_some_and(|f| f.contains("shadow_"));
    let skipped: Vec<&Value> = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == "skipped" && !shadow(t))
        .collect();
    assert_eq!(
        skipped.len(),
        2,
        "only the exhaustive sweep and the cut at every op are skipped: {skipped:?}"
    );
    assert!(report["counts"]["passed"].as_u64().unwrap() >= 11, "{}", text(&output));
}

/// A cut at half of an upload over each transport leaves 1.0.0 running, committed, with the
/// user's file; then a push over each transport goes through.
#[test]
fn a_cut_mid_upload_over_any_transport_leaves_the_old_image() {
    let _one = one_at_a_time();
    virtual_board();
    let dir = TempDir::new("cuts");
    let mut scenario = String::from(
        "name = \"cuts mid-upload\"\n\
         [[step]]\nprovision = { version = \"1.0.0\" }\n\
         [[step]]\npower_on = true\n\
         [[step]]\nwrite_file = { name = \"conf9.json\", content = '{\"a\": 1}' }\n",
    );
    for transport in ["rpc", "http", "pull"] {
        scenario += &format!(
            "[[step]]\npush = {{ bundle = {{ version = \"2.0.0\" }}, transport = \"{transport}\" }}\ncut = {{ at_fraction = 0.5 }}\n\
             [[step]]\npower_on = true\n\
             [[step]]\nexpect = {{ version = \"1.0.0\", active_slot = 0, committed = true, files = {{ \"conf9.json\" = '{{\"a\": 1}}' }} }}\n"
        );
    }
    for (version, transport) in [("2.0.0", "http"), ("3.0.0", "pull"), ("4.0.0", "rpc")] {
        scenario += &format!(
            "[[step]]\npush = {{ bundle = {{ version = \"{version}\" }}, transport = \"{transport}\" }}\n\
             [[step]]\nexpect = {{ version = \"{version}\", committed = true, files = {{ \"conf9.json\" = '{{\"a\": 1}}' }} }}\n"
        );
    }
    let file = dir.0.join("cuts.toml");
    std::fs::write(&file, scenario).unwrap();
    let (output, report) = run_scenarios(&dir.0, &[file.to_str().unwrap()]);
    assert_eq!(report["trials"][0]["outcome"], "passed", "{}", text(&output));
    let cuts =
        report["trials"][0]["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "power_cut").count();
    assert_eq!(cuts, 3, "{}", text(&output));
}

/// A `virtual-board` process of the test's own, killed at the end.
struct Device {
    child: Child,
    lines: Receiver<String>,
    serial: String,
    http: String,
}

impl Device {
    fn start(binary: &Path, dir: &Path, provision: &Path) -> Device {
        let mut child = Command::new(binary)
            .args(["--flash", dir.join("flash.bin").to_str().unwrap(), "--platform", "esp32"])
            .args(["--provision", provision.to_str().unwrap(), "--http", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = read_lines(child.stdout.take().unwrap());
        let mut device = Device { child, lines, serial: String::new(), http: String::new() };
        loop {
            let line = device.line("ready");
            if let Some(path) = line.strip_prefix("serial=") {
                device.serial = path.into();
            } else if let Some(addr) = line.strip_prefix("http=") {
                device.http = addr.into();
            } else if line == "ready" {
                return device;
            }
        }
    }

    /// The next stdout line; panics, saying what it waited for, after 10 s.
    fn line(&self, waiting_for: &str) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("virtual-board: no line within 10 s, waiting for {waiting_for} ({e})"))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lines(out: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(output)))
}

#[test]
fn hil_call_and_hil_ota_over_the_pty_and_http() {
    let _one = one_at_a_time();
    let binary = virtual_board();
    let dir = TempDir::new("call-ota");
    let d = &dir.0;
    std::fs::write(d.join("v1.zip"), bundle("1.0.0", Behaviour::Healthy, 64 * 1024)).unwrap();
    std::fs::write(d.join("v2.zip"), bundle("2.0.0", Behaviour::NeverCommits, 1024 * 1024)).unwrap();
    std::fs::write(d.join("v3.zip"), bundle("3.0.0", Behaviour::Healthy, 64 * 1024)).unwrap();
    let device = Device::start(&binary, d, &d.join("v1.zip"));
    let pty = device.serial.as_str();
    let http = format!("http://{}/rpc", device.http);

    let info = hil(&["call", "Sys.GetInfo", "--port", pty], d);
    assert_eq!(info.status.code(), Some(0), "{}", text(&info));
    assert_eq!(json_of(&info)["fw_version"], "1.0.0");

    // A device error is data: printed as {code, message}, exit 1.
    let refused = hil(&["call", "OTA.Commit", "--port", pty], d);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert_eq!(json_of(&refused)["code"], -1, "{}", text(&refused));
    let unknown = hil(&["call", "No.Such", "{}", "--port", &http], d);
    assert_eq!(json_of(&unknown)["message"], "No handler for No.Such", "{}", text(&unknown));

    // The 1 MiB push, timed; the device reboots into 2.0.0, uncommitted.
    let started = Instant::now();
    let pushed = hil(&["ota", "v2.zip", "--port", pty, "--commit-timeout", "300"], d);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(pushed.status.code(), Some(0), "{}", text(&pushed));
    assert!(
        String::from_utf8_lossy(&pushed.stdout).contains("Update applied, finalizing"),
        "{}",
        text(&pushed)
    );
    eprintln!(
        "hil ota: 1 MiB bundle over the pty in 512-byte writes: {seconds:.2} s, {:.0} KB/s",
        1049.0 / seconds
    );
    while !device.line("the reboot after the update").starts_with("reboot:") {}
    let state = hil(&["call", "OTA.GetBootState", "--port", &http], d);
    let state = json_of(&state);
    assert_eq!(
        (state["active_slot"].as_u64(), state["is_committed"].as_bool()),
        (Some(1), Some(false)),
        "{state}"
    );

    // An uncommitted image refuses the next update; the device keeps running 2.0.0.
    let again = hil(&["ota", "v3.zip", "--port", pty], d);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("refused the update at OTA.Begin")
            && stderr.contains("stays on its running firmware"),
        "{stderr}"
    );
    assert_eq!(json_of(&hil(&["call", "Sys.GetInfo", "--port", pty], d))["fw_version"], "2.0.0");

    let commit = hil(&["call", "OTA.Commit", "--port", &http], d);
    assert_eq!(commit.status.code(), Some(0), "{}", text(&commit));

    // The same push over HTTP RPC.
    let over_http = hil(&["ota", "v3.zip", "--port", &format!("http://{}", device.http)], d);
    assert_eq!(over_http.status.code(), Some(0), "{}", text(&over_http));
    while !device.line("the reboot after the update over HTTP").starts_with("reboot:") {}
    assert_eq!(json_of(&hil(&["call", "Sys.GetInfo", "--port", pty], d))["fw_version"], "3.0.0");
}

#[test]
fn hil_call_without_a_device_says_what_to_check() {
    let dir = TempDir::new("no-device");
    let missing = hil(&["call", "Sys.GetInfo", "--port", "/dev/hil-no-such-port"], &dir.0);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("cannot open /dev/hil-no-such-port") && stderr.contains("help: check the port"),
        "{stderr}"
    );
    let bad = hil(&["call", "Sys.GetInfo", "{not json", "--port", "/dev/null"], &dir.0);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    // Nothing listens on port 9 of loopback (discard is never served in test machines).
    let http = hil(&["call", "Sys.GetInfo", "--port", "http://127.0.0.1:9/rpc", "--timeout", "2s"], &dir.0);
    assert_eq!(http.status.code(), Some(2), "{}", text(&http));
}

/// A step's `timeout` bounds every wait the board does for it, and the error says what it was
/// still waiting for.
#[test]
fn a_step_timeout_ends_the_wait_and_names_it() {
    let _one = one_at_a_time();
    virtual_board();
    let dir = TempDir::new("step-timeout");
    let scenario = "name = \"too little time\"\n\
         [[step]]\nprovision = { version = \"1.0.0\" }\n\
         [[step]]\npower_on = true\ntimeout = \"1ms\"\n";
    let file = dir.0.join("timeout.toml");
    std::fs::write(&file, scenario).unwrap();
    let (output, report) = run_scenarios(&dir.0, &[file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "an infrastructure error: {}", text(&output));
    let trial = &report["trials"][0];
    assert_eq!(trial["outcome"], "error", "{}", text(&output));
    let message = trial["message"].as_str().unwrap();
    assert!(message.starts_with("step 2 (line 4): "), "{message}");
    assert!(message.contains("still waiting for it"), "{message}");
}
