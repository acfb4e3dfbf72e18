//! The MQTT channel (§7) and ota-shadow (§6.3) of the virtual board, over a broker named in
//! `conf9.json` (`mqtt.enable`, `mqtt.server`, `mqtt.client_id`, `mqtt.user`, `mqtt.pass`,
//! `rpc.mqtt.qos`). Topics, envelope rules and documents are `ota_proto::mqtt`'s, what the shadow
//! does is `ota_app::shadow`'s; this file only carries messages.
//!
//! A session lasts one boot with one configuration: the device connects once a firmware runs,
//! and drops the connection when it reboots or when `conf9.json` changes, as a device that
//! restarts does. On each connection it first tells the shadow (which commits an update that
//! landed, or reports one that rolled back), then subscribes to `<id>/rpc`, `<id>/rpc/#`, the
//! shadow's delta and `get/accepted`, and asks for the shadow (`…/get`). A broker that is not
//! there, or goes away, is retried every [`RETRY`]; the firmware runs on meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ota_app::config::MqttConfig;
use ota_app::shadow::ShadowOut;
use ota_proto::mqtt::{self, ShadowTopic};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

use super::{SharedDevice, lock};

/// How long the channel waits before it tries a broker again, and how often it checks whether
/// the device rebooted or its configuration changed.
const RETRY: Duration = Duration::from_millis(100);
/// Requests the client queues before a publish waits.
const QUEUE_CAPACITY: usize = 1024;
/// The largest packet either way: far above `rpc.max_frame_size`, so that a client's larger
/// `OTA.Write` chunks pass.
const PACKET_MAX_BYTES: usize = 1024 * 1024;

/// Topics the device subscribes to on each connection: two for RPC, two for the shadow.
const SUBSCRIPTIONS: usize = 4;

/// What a session was opened for: when it changes, the session ends.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    boots: u64,
    device_id: String,
    mqtt: MqttConfig,
}

/// Starts the channel's thread.
pub fn start(device: SharedDevice) {
    std::thread::spawn(move || {
        loop {
            match identity(&device) {
                Some(id) => session(&device, id),
                None => std::thread::sleep(RETRY),
            }
        }
    });
}

/// The identity a session would have now: `None` while no firmware runs or MQTT is off.
fn identity(device: &SharedDevice) -> Option<Identity> {
    let mut d = lock(device);
    let boots = d.boots;
    let (device_id, mqtt) = d.with_app(|app, _| (app.config().device_id, app.config().mqtt)).ok()?;
    (mqtt.enable && mqtt.server.is_some()).then_some(Identity { boots, device_id, mqtt })
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// One connection, until the device reboots or its configuration changes.
fn session(device: &SharedDevice, id: Identity) {
    let server = id.mqtt.server.clone().unwrap_or_default();
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(1883)),
        None => (server.clone(), 1883),
    };
    let mut options = MqttOptions::new(id.mqtt.client_id.clone(), host, port);
    options.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(PACKET_MAX_BYTES, PACKET_MAX_BYTES);
    if let Some(user) = &id.mqtt.user {
        options.set_credentials(user.clone(), id.mqtt.pass.clone().unwrap_or_default());
    }
    let (client, mut connection) = Client::new(options, QUEUE_CAPACITY);
    // One small frame each way per call: Nagle's algorithm would hold each back for a delayed ACK.
    no_delay(&mut connection);
    let done = Arc::new(AtomicBool::new(false));
    watch(device, &id, &client, &done);
    let channel = Channel { device: device.clone(), client, id };
    let mut subscribed = 0;
    // A broker that is away is said once, not at every retry.
    let mut failing = false;
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                (subscribed, failing) = (0, false);
                channel.connected();
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                subscribed += 1;
                if subscribed == SUBSCRIPTIONS {
                    // A rig waits for this line before it sends requests.
                    channel.log(&format!("mqtt: subscribed as {}", channel.id.device_id));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => channel.received(&p.topic, &p.payload),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                if !failing {
                    channel.log(&format!("mqtt: {server}: {e}; retrying every {} ms", RETRY.as_millis()));
                    failing = true;
                }
                std::thread::sleep(RETRY);
            }
        }
    }
    done.store(true, Ordering::Relaxed);
}

/// Ends the session (a disconnect) once the device rebooted or its configuration changed.
fn watch(device: &SharedDevice, id: &Identity, client: &Client, done: &Arc<AtomicBool>) {
    let (device, id, client, done) = (device.clone(), id.clone(), client.clone(), done.clone());
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(RETRY);
            if identity(&device).as_ref() != Some(&id) {
                done.store(true, Ordering::Relaxed);
                let _ = client.disconnect();
            }
        }
    });
}

/// What a session needs to answer.
#[derive(Clone)]
struct Channel {
    device: SharedDevice,
    client: Client,
    id: Identity,
}

impl Channel {
    fn log(&self, line: &str) {
        let d = lock(&self.device);
        d.console.log(d.clock.now_ms(), line);
    }

    fn publish(&self, topic: String, qos: QoS, retain: bool, payload: Vec<u8>) {
        if let Err(e) = self.client.try_publish(topic.clone(), qos, retain, payload) {
            self.log(&format!("mqtt: cannot publish on {topic}: {e}"));
        }
    }

    /// Connected: the shadow first (a commit, a report), then the subscriptions.
    fn connected(&self) {
        let id = &self.id.device_id;
        self.log(&format!("mqtt: connected to {} as {id}", self.id.mqtt.server.as_deref().unwrap_or("")));
        let outs = lock(&self.device).with_app(|app, now| app.shadow_connected(now)).unwrap_or_default();
        self.carry_out(outs);
        let rpc_qos = qos(self.id.mqtt.rpc_qos);
        for topic in mqtt::rpc_sub_topics(id) {
            let _ = self.client.try_subscribe(topic, rpc_qos);
        }
        for which in [ShadowTopic::UpdateDelta, ShadowTopic::GetAccepted] {
            let _ = self.client.try_subscribe(mqtt::shadow_topic(id, which), QoS::AtLeastOnce);
        }
        self.publish(mqtt::shadow_topic(id, ShadowTopic::Get), QoS::AtLeastOnce, false, Vec::new());
    }

    fn received(&self, topic: &str, payload: &[u8]) {
        let id = &self.id.device_id;
        if let Some(which) = mqtt::parse_shadow_topic(id, topic) {
            let outs = lock(&self.device)
                .with_app(|app, now| app.shadow_document(which, payload, now))
                .unwrap_or_default();
            self.carry_out(outs);
            return;
        }
        let request = match mqtt::rpc_request(id, topic, payload) {
            Ok(request) => request,
            Err(dropped) => {
                self.log(&format!("mqtt: {topic}: {dropped}"));
                return;
            }
        };
        let reply_to = request.src.clone().map(|src| mqtt::reply_topic(&src));
        let channel = self.clone();
        let reply = move |json: String| {
            if let Some(topic) = reply_to {
                channel.publish(topic, qos(channel.id.mqtt.rpc_qos), false, json.into_bytes());
            }
        };
        if let Err(e) = super::rpc::handle_frame(&self.device, request.to_json().as_bytes(), reply) {
            self.log(&format!("mqtt: {topic}: {e}"));
        }
    }

    /// Publishes reports, clears the delta, runs pulls (each on a thread of its own, so the
    /// channel answers RPC while a pull runs).
    fn carry_out(&self, outs: Vec<ShadowOut>) {
        let id = &self.id.device_id;
        for out in outs {
            match out {
                ShadowOut::Report(report) => {
                    self.log(&format!("shadow: ota.code {} ota.message {:?}", report.code, report.message));
                    let topic = mqtt::shadow_topic(id, ShadowTopic::Update);
                    self.publish(topic, QoS::AtLeastOnce, true, report.to_doc().into_bytes());
                }
                ShadowOut::ClearDelta => {
                    let topic = mqtt::shadow_topic(id, ShadowTopic::UpdateDelta);
                    self.publish(topic, QoS::AtLeastOnce, true, Vec::new());
                }
                ShadowOut::Pull(request) => {
                    let channel = self.clone();
                    std::thread::spawn(move || {
                        let url = request.url.clone();
                        let (_, outs) =
                            super::pull::run_then(&channel.device, &request, |app, now, outcome| {
                                app.shadow_pull_ended(&url, outcome.clone(), now)
                            });
                        channel.carry_out(outs.unwrap_or_default());
                    });
                }
            }
        }
    }
}

/// Sets TCP_NODELAY on the connection's socket.
fn no_delay(connection: &mut rumqttc::Connection) {
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    connection.eventloop.set_network_options(network);
}
