//! A fleet: several virtual boards driven as one board, and, with `mqtt = true`, a Mosquitto of
//! the runner's own per trial with every device on it (RPC over MQTT and ota-shadow, §6.3 and
//! §7 of the reference). Each member is a [`VirtualBoard`]; a step acts on the device the engine
//! selects (`device = N` or `"all"` in a scenario).
//!
//! | verb | what the fleet does |
//! |------|---------------------|
//! | `start_trial` | every member's; a fresh broker (no retained state from another trial) and the runner's client on it |
//! | power on | the member starts with `--conf9`: `device.id` `<board>-<N>`, `mqtt.enable`, `mqtt.server` |
//! | `write_file conf9.json` | the scenario's JSON with the runner's MQTT keys merged in, written through RPC and kept for later power-ons |
//! | `shadow` | plays the shadow service: the delta (`desired.ota.url`, a bundle the fleet serves, or a document as given), published retained, so a device that is off finds it when it connects |
//! | `expect reported` | reads the device's reports (`…/shadow/update`, retained); when it says "Update applied, finalizing" the fleet lets the reboot delay pass on the device's frozen clock and waits for the reboot, then for the next report |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use super::http_push::BundleServer;
use super::virtual_board::VirtualBoard;
use super::{
    Board, BoardError, BoardInfo, BoardResult, Capabilities, Cut, EventKind, OtaReport, PushRequest,
    PushResult, Refusal, ShadowSet, Status,
};
use crate::board::config::VirtualConfig;
use crate::broker::Broker;
use ota_proto::mqtt::{self, ShadowTopic};

/// The report an applied update sends before its reboot.
const APPLIED: &str = "Update applied, finalizing";
/// How long a shadow step waits for the broker to take the delta.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `expect reported` waits when the step set no timeout.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Fleet {
    info: BoardInfo,
    capabilities: Capabilities,
    config: VirtualConfig,
    members: Vec<VirtualBoard>,
    selected: usize,
    /// Per member: its `--conf9` file and what the fleet last wrote there.
    conf9: Vec<(PathBuf, Value)>,
    /// Per member: the `conf9.json` bytes the scenario last wrote, which a read gives back while
    /// the device holds their merged form.
    written: Vec<Option<Vec<u8>>>,
    shadow: Option<Shadow>,
}

/// The trial's broker, the runner's client on it, and what the devices reported.
struct Shadow {
    broker: Broker,
    client: Client,
    incoming: Receiver<Incoming>,
    /// The latest report of each device, numbered in the order they came.
    reports: BTreeMap<String, (u64, OtaReport)>,
    received: u64,
    /// The URL the last `shadow` step desired, per device (`None`: a document as given).
    desired: BTreeMap<String, Option<String>>,
    /// Bundles served for the devices' pulls, until the trial ends.
    servers: Vec<BundleServer>,
}

enum Incoming {
    Acked,
    Publish { topic: String, payload: Vec<u8> },
    Failed(String),
}

impl Fleet {
    pub fn new(name: &str, platform: &str, config: VirtualConfig) -> Fleet {
        let members: Vec<VirtualBoard> =
            (0..config.devices).map(|_| VirtualBoard::new(name, platform, config.clone())).collect();
        let info = members[0].info().clone();
        let capabilities = members[0].capabilities().clone();
        let conf9 = (0..config.devices)
            .map(|i| {
                let file =
                    std::env::temp_dir().join(format!("hil-fleet-{}-{name}-{i}.json", std::process::id()));
                (file, Value::Null)
            })
            .collect();
        let written = vec![None; config.devices];
        Fleet { info, capabilities, config, members, selected: 0, conf9, written, shadow: None }
    }

    fn member(&mut self) -> &mut VirtualBoard {
        &mut self.members[self.selected]
    }

    /// The member's `device.id`: `<board>-<N>`, unless the scenario's `conf9.json` names one.
    fn device_id(&self, index: usize) -> String {
        match self.conf9[index].1.pointer("/device/id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => format!("{}-{index}", self.info.name),
        }
    }

    fn shadow(&mut self) -> BoardResult<&mut Shadow> {
        self.shadow.as_mut().ok_or_else(|| BoardError::new("no trial started on the fleet"))
    }

    /// The runner's MQTT keys under `over` (a scenario's `conf9.json`, whose keys win), written
    /// to the member's `--conf9` file; the merged document.
    fn conf9_for(&mut self, index: usize, over: Value) -> BoardResult<Value> {
        let Some(shadow) = &self.shadow else { return Ok(over) };
        let id = format!("{}-{index}", self.info.name);
        let mut conf =
            json!({"device": {"id": id}, "mqtt": {"enable": true, "server": shadow.broker.server()}});
        if over.is_object() {
            merge(&mut conf, &over);
        }
        let (path, kept) = &mut self.conf9[index];
        std::fs::write(&*path, conf.to_string())
            .map_err(|e| BoardError::new(format!("cannot write {}: {e}", path.display())))?;
        *kept = conf.clone();
        Ok(conf)
    }

    fn start_shadow(&mut self) -> BoardResult<()> {
        self.shadow = None;
        let broker = Broker::start().map_err(|e| {
            BoardError::new(e).help("the fleet's broker is Debian's mosquitto: apt-get install mosquitto")
        })?;
        let mut options =
            MqttOptions::new(format!("hil-fleet-{}", std::process::id()), "127.0.0.1", broker.port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(options, 256);
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                let sent = match event {
                    Ok(Event::Incoming(Packet::ConnAck(_) | Packet::SubAck(_) | Packet::PubAck(_))) => {
                        tx.send(Incoming::Acked)
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        tx.send(Incoming::Publish { topic: p.topic.clone(), payload: p.payload.to_vec() })
                    }
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let _ = tx.send(Incoming::Failed(e.to_string()));
                        return;
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        let mut shadow = Shadow {
            broker,
            client,
            incoming,
            reports: BTreeMap::new(),
            received: 0,
            desired: BTreeMap::new(),
            servers: Vec::new(),
        };
        shadow.acked("connecting to the fleet's broker")?;
        let topic = mqtt::shadow_topic("+", ShadowTopic::Update);
        shadow.client.subscribe(topic, QoS::AtLeastOnce).map_err(|e| BoardError::new(e.to_string()))?;
        shadow.acked("subscribing to the devices' reports")?;
        self.shadow = Some(shadow);
        for index in 0..self.members.len() {
            self.conf9_for(index, Value::Null)?;
            let path = self.conf9[index].0.clone();
            self.members[index].set_conf9(Some(path));
        }
        Ok(())
    }
}

impl Shadow {
    /// Waits for the broker's acknowledgement, keeping reports that come meanwhile.
    fn acked(&mut self, doing: &str) -> BoardResult<()> {
        let deadline = Instant::now() + BROKER_TIMEOUT;
        loop {
            match self.next(deadline)? {
                Some(true) => return Ok(()),
                Some(false) => {}
                None => return Err(BoardError::new(format!("the broker did not answer while {doing}"))),
            }
        }
    }

    /// The next message before `deadline`: `Some(true)` an acknowledgement, `Some(false)` a
    /// report (kept), `None` nothing came.
    fn next(&mut self, deadline: Instant) -> BoardResult<Option<bool>> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.incoming.recv_timeout(left) {
            Ok(Incoming::Acked) => Ok(Some(true)),
            Ok(Incoming::Publish { topic, payload }) => {
                let device = topic.strip_prefix("$aws/things/").and_then(|t| t.split('/').next());
                if let (Some(device), Ok(report)) = (device, OtaReport::from_doc(&payload)) {
                    self.received += 1;
                    self.reports.insert(device.to_string(), (self.received, report));
                }
                Ok(Some(false))
            }
            Ok(Incoming::Failed(reason)) => {
                Err(BoardError::new(format!("the runner's MQTT client lost the broker: {reason}")))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(BoardError::new("the runner's MQTT client ended")),
        }
    }

    /// The device's latest report about what it was last asked for.
    fn latest(&self, device: &str) -> Option<(u64, OtaReport)> {
        let (seq, report) = self.reports.get(device)?;
        match self.desired.get(device) {
            Some(Some(url)) if *url != report.url => None,
            _ => Some((*seq, report.clone())),
        }
    }
}

/// `over`'s keys into `base`, objects merged key by key.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over.clone(),
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (path, _) in &self.conf9 {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Board for Fleet {
    fn info(&self) -> &BoardInfo {
        &self.info
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn devices(&self) -> usize {
        self.members.len()
    }

    fn has_shadow(&self) -> bool {
        self.config.mqtt
    }

    fn select_device(&mut self, index: usize) -> BoardResult<()> {
        if index >= self.members.len() {
            return Err(BoardError::new(format!(
                "board {} drives {} devices; there is no device {index}",
                self.info.name,
                self.members.len()
            )));
        }
        self.selected = index;
        Ok(())
    }

    fn start_trial(&mut self, seed: u64) -> BoardResult<()> {
        self.selected = 0;
        self.written = vec![None; self.members.len()];
        for member in &mut self.members {
            member.start_trial(seed)?;
        }
        if self.config.mqtt {
            self.start_shadow()?;
        }
        Ok(())
    }

    fn provision(&mut self, bundle: &[u8]) -> BoardResult<()> {
        self.member().provision(bundle)
    }

    fn power_on(&mut self) -> BoardResult<()> {
        self.member().power_on()
    }

    fn power_cut(&mut self) -> BoardResult<()> {
        self.member().power_cut()
    }

    fn arm_cut(&mut self, cut: Cut) -> BoardResult<()> {
        self.member().arm_cut(cut)
    }

    fn disarm_cut(&mut self) -> BoardResult<()> {
        self.member().disarm_cut()
    }

    fn push(&mut self, request: &PushRequest<'_>) -> BoardResult<PushResult> {
        self.member().push(request)
    }

    fn wait(&mut self, ms: u64) -> BoardResult<()> {
        self.member().wait(ms)
    }

    fn commit(&mut self) -> BoardResult<Result<(), Refusal>> {
        self.member().commit()
    }

    fn revert(&mut self) -> BoardResult<Result<(), Refusal>> {
        self.member().revert()
    }

    fn reboot(&mut self) -> BoardResult<()> {
        self.member().reboot()
    }

    fn snapshot(
        &mut self,
        set_as_revert: bool,
        commit_timeout_s: Option<u32>,
    ) -> BoardResult<Result<u8, Refusal>> {
        self.member().snapshot(set_as_revert, commit_timeout_s)
    }

    fn write_file(&mut self, name: &str, content: &[u8]) -> BoardResult<Result<(), Refusal>> {
        if name != ota_app::config::USER_FILE || self.shadow.is_none() {
            return self.member().write_file(name, content);
        }
        // The device keeps its place on the broker whatever the scenario configures.
        let Ok(base) = serde_json::from_slice::<Value>(content) else {
            return self.member().write_file(name, content);
        };
        let merged = self.conf9_for(self.selected, base)?;
        self.written[self.selected] = Some(content.to_vec());
        self.member().write_file(name, merged.to_string().as_bytes())
    }

    fn read_file(&mut self, name: &str) -> BoardResult<Result<Option<Vec<u8>>, Refusal>> {
        let read = self.member().read_file(name)?;
        let index = self.selected;
        if name != ota_app::config::USER_FILE {
            return Ok(read);
        }
        // The merged form of what the scenario wrote reads back as what it wrote.
        match (&read, &self.written[index]) {
            (Ok(Some(bytes)), Some(written))
                if serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v == self.conf9[index].1) =>
            {
                Ok(Ok(Some(written.clone())))
            }
            _ => Ok(read),
        }
    }

    fn status(&mut self) -> BoardResult<Status> {
        self.member().status()
    }

    fn device_ms(&self) -> u64 {
        self.members[self.selected].device_ms()
    }

    fn step_timeout(&mut self, timeout: Duration) {
        for member in &mut self.members {
            member.step_timeout(timeout);
        }
    }

    fn drain_events(&mut self) -> Vec<(u64, EventKind)> {
        self.members.iter_mut().flat_map(|m| m.drain_events()).collect()
    }

    fn drain_console(&mut self) -> Vec<String> {
        let many = self.members.len() > 1;
        let mut lines = Vec::new();
        for (index, member) in self.members.iter_mut().enumerate() {
            let drained = member.drain_console();
            lines.extend(drained.into_iter().map(|l| if many { format!("[device {index}] {l}") } else { l }));
        }
        lines
    }

    fn shadow_set(&mut self, desired: &ShadowSet<'_>) -> BoardResult<()> {
        let device = self.device_id(self.selected);
        let shadow = self.shadow()?;
        let (url, doc) = match desired {
            ShadowSet::Bundle(bytes) => {
                let server = BundleServer::start(bytes.to_vec(), None)
                    .map_err(|e| BoardError::new(format!("cannot serve the bundle on loopback: {e}")))?;
                let url = server.url();
                shadow.servers.push(server);
                (Some(url.clone()), mqtt::delta_doc(&url))
            }
            ShadowSet::Url(url) => (Some(url.to_string()), mqtt::delta_doc(url)),
            ShadowSet::Doc(doc) => (None, doc.to_string()),
        };
        shadow.reports.remove(&device);
        shadow.desired.insert(device.clone(), url);
        let topic = mqtt::shadow_topic(&device, ShadowTopic::UpdateDelta);
        shadow
            .client
            .publish(topic, QoS::AtLeastOnce, true, doc)
            .map_err(|e| BoardError::new(format!("cannot publish the delta: {e}")))?;
        shadow.acked("publishing the delta")
    }

    fn shadow_reported(&mut self, accept: &dyn Fn(&OtaReport) -> bool) -> BoardResult<Option<OtaReport>> {
        let device = self.device_id(self.selected);
        let deadline =
            self.members[self.selected].step_deadline().unwrap_or_else(|| Instant::now() + REPORT_TIMEOUT);
        let mut rebooted_after = None;
        loop {
            let latest = self.shadow()?.latest(&device);
            if let Some((seq, report)) = &latest {
                if accept(report) || report.code <= 0 {
                    return Ok(Some(report.clone()));
                }
                if report.message == APPLIED && rebooted_after != Some(*seq) && self.member().is_on() {
                    // The device's clock is frozen: its reboot waits for the runner.
                    rebooted_after = Some(*seq);
                    self.member().await_update_reboot("the shadow's update")?;
                    continue;
                }
            }
            if self.shadow()?.next(deadline)?.is_none() {
                return Ok(latest.map(|(_, report)| report));
            }
        }
    }
}
