//! The virtual board's MQTT channel and ota-shadow against a real Mosquitto (Debian's
//! `mosquitto`), started by each test on a loopback port of its own and stopped at its end.
//! The test plays the other side: `mos`'s RPC client and the shadow service, which on a plain
//! broker is a retained delta per device.

#[path = "../../hil/src/broker.rs"]
mod broker;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::Broker;
use ota_app::image::{Behaviour, Image};
use ota_bundle::Bundle;
use ota_proto::mqtt::{self, OtaReport, ShadowTopic};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

/// How long a test waits for a message it expects: far above what it takes, so a slow machine
/// never fails; it only bounds a test that is broken.
const WAIT: Duration = Duration::from_secs(60);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vb-mqtt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A bundle whose image waits for its commit (no simulated header), or one with a behaviour.
fn bundle(version: &str, behaviour: Option<Behaviour>) -> Vec<u8> {
    let app = match behaviour {
        Some(b) => Image::new(version, 40_000).behaviour(b).bytes(),
        None => (0..40_000u32).map(|i| (i as u8) ^ version.as_bytes()[0]).collect(),
    };
    let fs = ota_lfs::build_image(64 * 1024, 4096, &[("app.json", version.as_bytes())]);
    Bundle::new("fw", "host").version(version).build_id(&format!("b-{version}")).app(app).fs(fs).build()
}

/// A virtual board process with MQTT configured in its `conf9.json`.
struct Board {
    child: Child,
    /// The device's typed events (`@ota` lines on its stderr).
    events: Receiver<ota_app::Event>,
}

impl Board {
    /// Waits for the next event `want` accepts.
    fn wait_event(&self, mut want: impl FnMut(&ota_app::Event) -> bool) {
        loop {
            let event = self.events.recv_timeout(WAIT).expect("the board reports its events");
            if want(&event) {
                return;
            }
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn conf9(device_id: &str, broker: &Broker, extra: Value) -> Value {
    let mut conf = json!({
        "device": {"id": device_id},
        "mqtt": {"enable": true, "server": broker.server()},
        "shadow": {"autocommit": true},
    });
    if let (Some(conf), Value::Object(extra)) = (conf.as_object_mut(), extra) {
        conf.extend(extra);
    }
    conf
}

/// Provisions 1.0.0 on a fresh flash in `dir` (once) and starts the board with `conf`.
fn start(dir: &Path, conf: &Value) -> Board {
    let v1 = dir.join("v1.zip");
    let flash = dir.join("flash");
    let mut args: Vec<String> = vec!["--flash".into(), flash.display().to_string()];
    if !flash.exists() {
        std::fs::write(&v1, bundle("1.0.0", None)).unwrap();
        args.extend(["--provision".into(), v1.display().to_string()]);
    }
    std::fs::write(dir.join("conf9.json"), conf.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtual-board"))
        .args(&args)
        .args(["--app-slot-kib", "256", "--fs-slot-kib", "64", "--serial", "none", "--http", "none"])
        .arg("--conf9")
        .arg(dir.join("conf9.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("virtual-board starts");
    let (tx, events) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(stamped) = ota_app::Stamped::from_console_line(&line) {
                let _ = tx.send(stamped.event);
            }
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap() == "ready" {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Board { child, events }
}

/// The test's side of the broker: `mos`'s client and the shadow service.
struct Peer {
    client: Client,
    messages: Receiver<(String, Vec<u8>)>,
    /// Messages received while the test waited for another, oldest first: boards report in
    /// any order, and a report skipped while waiting for another board's is still there later.
    unread: Vec<(String, Vec<u8>)>,
    acks: Receiver<()>,
    next_id: u64,
}

impl Peer {
    fn connect(broker: &Broker, client_id: &str) -> Peer {
        Peer::connect_as(broker, client_id, None)
    }

    fn connect_as(broker: &Broker, client_id: &str, credentials: Option<(&str, &str)>) -> Peer {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.port);
        options.set_max_packet_size(2 << 20, 2 << 20);
        if let Some((user, pass)) = credentials {
            options.set_credentials(user, pass);
        }
        let (client, mut connection) = Client::new(options, 64);
        // One small frame each way per call: Nagle's algorithm would hold each back for a delayed ACK.
        no_delay(&mut connection);
        let (tx, messages) = mpsc::channel();
        let (ack, acks) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_) | Packet::SubAck(_))) => {
                        let _ = ack.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        acks.recv_timeout(WAIT).expect("the test client connects");
        Peer { client, messages, unread: Vec::new(), acks, next_id: 1 }
    }

    fn subscribe(&self, topic: &str) {
        self.client.subscribe(topic, QoS::AtLeastOnce).unwrap();
        self.acks.recv_timeout(WAIT).expect("the subscription is acknowledged");
    }

    /// The next message whose topic is `topic` and that `want` accepts.
    fn wait(&mut self, topic: &str, want: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
        self.wait_for(topic, want, WAIT).unwrap_or_else(|| panic!("nothing on {topic}"))
    }

    fn wait_for(
        &mut self,
        topic: &str,
        mut want: impl FnMut(&[u8]) -> bool,
        limit: Duration,
    ) -> Option<Vec<u8>> {
        if let Some(at) = self.unread.iter().position(|(t, p)| t == topic && want(p)) {
            return Some(self.unread.remove(at).1);
        }
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (t, payload) = self.messages.recv_timeout(left).ok()?;
            if t == topic && want(&payload) {
                return Some(payload);
            }
            self.unread.push((t, payload));
        }
    }

    /// `mos --port mqtt://…/DEVICE call METHOD PARAMS`.
    fn call(&mut self, device: &str, method: &str, params: Value) -> Value {
        self.call_within(device, method, &params, WAIT).unwrap_or_else(|| panic!("no reply to {method}"))
    }

    fn call_within(&mut self, device: &str, method: &str, params: &Value, limit: Duration) -> Option<Value> {
        let src = mqtt::client_src(device, "test");
        let reply = mqtt::reply_topic(&src);
        self.subscribe(&reply);
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"id": id, "src": src, "method": method, "params": params});
        self.client.publish(mqtt::rpc_topic(device), QoS::AtLeastOnce, false, frame.to_string()).unwrap();
        let payload = self.wait_for(
            &reply,
            |p| serde_json::from_slice::<Value>(p).is_ok_and(|v| v["id"] == id),
            limit,
        )?;
        serde_json::from_slice(&payload).ok()
    }

    /// Waits until the device answers on MQTT: it subscribes once it has connected, and a
    /// request sent before that reaches no one, so `Sys.GetInfo` is sent again until one is
    /// answered (read-only, so a repeat changes nothing).
    fn wait_online(&mut self, device: &str) {
        for _ in 0..60 {
            if self.call_within(device, "Sys.GetInfo", &Value::Null, Duration::from_secs(1)).is_some() {
                return;
            }
        }
        panic!("{device} never answered on MQTT");
    }

    /// The shadow service: the desired URL as a retained delta.
    fn set_desired(&self, device: &str, doc: &str) {
        let topic = mqtt::shadow_topic(device, ShadowTopic::UpdateDelta);
        self.client.publish(topic, QoS::AtLeastOnce, true, doc.to_string()).unwrap();
    }

    /// Waits for the device to report `url` with a code `want` accepts.
    fn reported(&mut self, device: &str, url: &str, want: impl Fn(i64) -> bool) -> OtaReport {
        let topic = mqtt::shadow_topic(device, ShadowTopic::Update);
        let payload = self.wait(&topic, |p| {
            OtaReport::from_doc(p).is_ok_and(|r| (r.url == url || url.is_empty()) && want(r.code))
        });
        OtaReport::from_doc(&payload).unwrap()
    }
}

/// A loopback HTTP server for pulls: each path's bundle, 404 otherwise. A path in `held` sends
/// half its body, then waits for `release` before the rest.
struct Bundles {
    port: u16,
    release: mpsc::Sender<()>,
}

impl Bundles {
    fn serve(files: BTreeMap<&'static str, Vec<u8>>, held: Option<&'static str>) -> Bundles {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (files, released) = (files.clone(), released.clone());
                std::thread::spawn(move || answer(stream, &files, held, &released));
            }
        });
        Bundles { port, release }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

fn answer(
    mut stream: TcpStream,
    files: &BTreeMap<&'static str, Vec<u8>>,
    held: Option<&str>,
    released: &Mutex<Receiver<()>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/").trim_start_matches('/');
    let Some(body) = files.get(path) else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
    let half = if held == Some(path) { body.len() / 2 } else { body.len() };
    let _ = stream.write_all(&body[..half]).and_then(|()| stream.flush());
    if half < body.len() {
        let _ = released.lock().unwrap().recv();
        let _ = stream.write_all(&body[half..]);
    }
}

/// The running version and whether it is committed. The device reports to the shadow before
/// it subscribes to its RPC topics, so a report seen does not mean it answers RPC yet.
fn info_version(peer: &mut Peer, device: &str) -> (Value, Value) {
    peer.wait_online(device);
    let info = peer.call(device, "Sys.GetInfo", Value::Null);
    let state = peer.call(device, "OTA.GetBootState", Value::Null);
    (info["result"]["fw_version"].clone(), state["result"]["is_committed"].clone())
}

#[test]
fn rpc_over_mqtt_replies_to_src_and_drops_a_request_without_one() {
    let broker = Broker::start().unwrap();
    let dir = temp_dir("rpc");
    let _board = start(&dir, &conf9("dev-rpc", &broker, json!({})));
    let mut peer = Peer::connect(&broker, "test");
    peer.wait_online("dev-rpc");
    peer.unread.clear();
    let reply = peer.call("dev-rpc", "Sys.GetInfo", Value::Null);
    assert_eq!(
        (reply["src"].clone(), reply["dst"].clone()),
        (json!("dev-rpc"), json!("dev-rpc/rpc-resp/test"))
    );
    assert_eq!(reply["result"]["fw_version"], "1.0.0");
    // No src: dropped. The reply that comes next on the reply topic is the following request's.
    let reply_topic = mqtt::reply_topic(&mqtt::client_src("dev-rpc", "test"));
    peer.client
        .publish("dev-rpc/rpc", QoS::AtLeastOnce, false, r#"{"id":900,"method":"Sys.GetInfo"}"#)
        .unwrap();
    // The suffix of `<id>/rpc/<Method>` names the method.
    let frame = json!({"id": 901, "src": mqtt::client_src("dev-rpc", "test")});
    peer.client.publish("dev-rpc/rpc/OTA.GetBootState", QoS::AtLeastOnce, false, frame.to_string()).unwrap();
    let next = peer.wait(&reply_topic, |_| true);
    let next: Value = serde_json::from_slice(&next).unwrap();
    assert_eq!((next["id"].clone(), next["result"]["active_slot"].clone()), (json!(901), json!(0)));
}

#[test]
fn the_shadow_updates_three_boards_one_of_which_was_offline_when_the_url_was_set() {
    let broker = Broker::start().unwrap();
    let server = Bundles::serve(BTreeMap::from([("v2.zip", bundle("2.0.0", None))]), None);
    let url = server.url("v2.zip");
    let mut peer = Peer::connect(&broker, "fleet");
    let ids = ["fleet-a", "fleet-b", "fleet-c"];
    let dirs: Vec<PathBuf> = ids.iter().map(|id| temp_dir(id)).collect();
    for id in ids {
        peer.subscribe(&mqtt::shadow_topic(id, ShadowTopic::Update));
    }
    let mut boards: Vec<Board> =
        ids[..2].iter().zip(&dirs).map(|(id, dir)| start(dir, &conf9(id, &broker, json!({})))).collect();
    // The third board is off while the desired URL is set for all three.
    for id in ids {
        peer.set_desired(id, &mqtt::delta_doc(&url));
    }
    for id in &ids[..2] {
        let report = peer.reported(id, &url, |code| code <= 0);
        assert_eq!((report.code, report.message.as_str()), (0, "Update committed: 2.0.0"), "{id}");
    }
    boards.push(start(&dirs[2], &conf9(ids[2], &broker, json!({}))));
    let report = peer.reported(ids[2], &url, |code| code <= 0);
    assert_eq!((report.code, report.message.as_str()), (0, "Update committed: 2.0.0"));
    for id in ids {
        assert_eq!(info_version(&mut peer, id), (json!("2.0.0"), json!(true)), "{id}");
    }
}

#[test]
fn bad_shadow_input_leaves_the_running_firmware_and_says_why() {
    let broker = Broker::start().unwrap();
    let mut refused = bundle("2.0.0", None);
    let at = refused.len() / 2;
    refused[at..at + 64].fill(0);
    let server = Bundles::serve(BTreeMap::from([("refused.zip", refused)]), None);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut peer = Peer::connect(&broker, "bad");
    let id = "dev-bad";
    peer.subscribe(&mqtt::shadow_topic(id, ShadowTopic::Update));
    let dir = temp_dir("bad");
    let _board = start(&dir, &conf9(id, &broker, json!({})));

    peer.set_desired(id, r#"{"state": {"ota": {"url": 17}}}"#);
    let malformed = peer.reported(id, "", |code| code < 0);
    assert!(malformed.message.starts_with("malformed shadow document"), "{}", malformed.message);

    let silent = format!("http://127.0.0.1:{closed}/fw.zip");
    peer.set_desired(id, &mqtt::delta_doc(&silent));
    let failed = peer.reported(id, &silent, |code| code < 0);
    assert!(failed.message.contains("the running firmware stays"), "{}", failed.message);

    let url = server.url("refused.zip");
    peer.set_desired(id, &mqtt::delta_doc(&url));
    let refused = peer.reported(id, &url, |code| code < 0);
    assert!(refused.message.contains("the running firmware stays"), "{}", refused.message);

    assert_eq!(info_version(&mut peer, id), (json!("1.0.0"), json!(true)));
}

#[test]
fn a_broker_gone_during_a_shadow_update_means_a_missed_commit_that_rolls_back_and_is_reported() {
    let mut broker = Broker::start().unwrap();
    let server = Bundles::serve(BTreeMap::from([("v2.zip", bundle("2.0.0", None))]), Some("v2.zip"));
    let url = server.url("v2.zip");
    let id = "dev-away";
    let dir = temp_dir("away");
    // Two seconds of device time to commit; the broker is away for all of them.
    let board = start(&dir, &conf9(id, &broker, json!({"update": {"commit_timeout": 2}})));
    {
        let mut peer = Peer::connect(&broker, "away");
        peer.subscribe(&mqtt::shadow_topic(id, ShadowTopic::Update));
        peer.set_desired(id, &mqtt::delta_doc(&url));
        peer.reported(id, &url, |code| code == 1);
    }
    // Half the bundle has gone out; the broker goes, then the rest of the bundle.
    broker.stop();
    server.release.send(()).unwrap();
    // The new firmware cannot reach the shadow, so nothing commits it: at its deadline the
    // device rolls back. When the broker is back, the old firmware says so.
    board.wait_event(|e| matches!(e, ota_app::Event::Running { version, .. } if version == "2.0.0"));
    board.wait_event(|e| matches!(e, ota_app::Event::Reverted));
    board.wait_event(|e| matches!(e, ota_app::Event::Running { version, .. } if version == "1.0.0"));
    broker.restart().unwrap();
    let mut peer = Peer::connect(&broker, "away2");
    peer.subscribe(&mqtt::shadow_topic(id, ShadowTopic::Update));
    let report = peer.reported(id, &url, |code| code < 0);
    assert_eq!(report.message, format!("rolled back: the update from {url} was not committed; 1.0.0 runs"));
    assert_eq!(info_version(&mut peer, id), (json!("1.0.0"), json!(true)));
}

/// Sets TCP_NODELAY on the connection's socket.
fn no_delay(connection: &mut rumqttc::Connection) {
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    connection.eventloop.set_network_options(network);
}

#[test]
fn mqtt_user_and_pass_from_conf9_log_in_to_a_broker_that_wants_them() {
    let broker = Broker::start_with_credentials("fleet-user", "s3cret").unwrap();
    let dir = temp_dir("creds");
    let conf = conf9(
        "dev-creds",
        &broker,
        json!({"mqtt": {"enable": true, "server": broker.server(), "user": "fleet-user", "pass": "s3cret"}}),
    );
    let _board = start(&dir, &conf);
    let mut peer = Peer::connect_as(&broker, "creds", Some(("fleet-user", "s3cret")));
    peer.wait_online("dev-creds");
    assert_eq!(info_version(&mut peer, "dev-creds"), (json!("1.0.0"), json!(true)));
}
