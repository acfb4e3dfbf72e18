//! RPC over MQTT, as `mos --port mqtt://HOST:PORT/DEVICE_ID` speaks it (MOS `codec/mqtt.go`):
//! requests go to `<device id>/rpc` with `src` `<device id>/rpc-resp/<client id>`, and replies
//! come back on `<src>/rpc`. Topic names are `ota_proto::mqtt`'s. The broker is a real one; the
//! client is `rumqttc`'s blocking client, its connection served by a thread of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ota_proto::mqtt;
use ota_proto::rpc::frame::{self, Id, Request};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::rpc_client::{CallResult, TransportError};

/// How long connecting to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest packet either way, far above an `OTA.Write` frame.
const PACKET_MAX_BYTES: usize = 1024 * 1024;

/// What the connection's thread hands over.
enum Incoming {
    /// A CONNACK or SUBACK.
    Acked,
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    /// The connection failed; the thread has ended.
    Failed(String),
}

/// An RPC channel to one device through a broker.
pub struct MqttClient {
    pub(crate) port: String,
    device_id: String,
    src: String,
    client: Client,
    incoming: Receiver<Incoming>,
    next_id: u64,
}

/// `mqtt://HOST[:PORT]/DEVICE_ID` as (host, port, device id); the port defaults to 1883.
pub fn parse_port(port: &str) -> Option<(String, u16, String)> {
    let rest = port.strip_prefix("mqtt://")?;
    let (server, device_id) = rest.split_once('/')?;
    let device_id = device_id.trim_end_matches('/');
    if server.is_empty() || device_id.is_empty() || device_id.contains(['/', '#', '+']) {
        return None;
    }
    let (host, number) = match server.rsplit_once(':') {
        Some((host, number)) => (host, number.parse().ok()?),
        None => (server, 1883),
    };
    Some((host.to_string(), number, device_id.to_string()))
}

impl MqttClient {
    /// Connects to the broker and subscribes to the reply topic.
    pub fn open(port: &str) -> Result<MqttClient, TransportError> {
        let (host, number, device_id) = parse_port(port).ok_or_else(|| TransportError::Open {
            port: port.into(),
            reason: "an MQTT port is mqtt://HOST[:PORT]/DEVICE_ID".into(),
        })?;
        static CLIENTS: AtomicU64 = AtomicU64::new(0);
        let client_id = format!("hil-{}-{}", std::process::id(), CLIENTS.fetch_add(1, Ordering::Relaxed));
        let mut options = MqttOptions::new(client_id.clone(), host, number);
        options.set_max_packet_size(PACKET_MAX_BYTES, PACKET_MAX_BYTES);
        let (client, mut connection) = Client::new(options, 64);
        // One small frame each way per call: Nagle's algorithm would hold each back for a delayed ACK.
        no_delay(&mut connection);
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                let sent = match event {
                    Ok(Event::Incoming(Packet::ConnAck(_) | Packet::SubAck(_))) => tx.send(Incoming::Acked),
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
        let src = mqtt::client_src(&device_id, &client_id);
        let mut this = MqttClient {
            port: port.into(),
            device_id,
            src,
            client,
            incoming,
            next_id: crate::rpc_client::first_id(),
        };
        this.acked("connecting").map_err(|e| match e {
            TransportError::Io { port, reason } => TransportError::Refused { port, reason },
            other => other,
        })?;
        this.client
            .subscribe(mqtt::reply_topic(&this.src), QoS::AtLeastOnce)
            .map_err(|e| TransportError::Io { port: this.port.clone(), reason: e.to_string() })?;
        this.acked("subscribing")?;
        Ok(this)
    }

    fn acked(&mut self, doing: &str) -> Result<(), TransportError> {
        match self.incoming.recv_timeout(CONNECT_TIMEOUT) {
            Ok(Incoming::Acked) => Ok(()),
            Ok(Incoming::Failed(reason)) => Err(TransportError::Io { port: self.port.clone(), reason }),
            Ok(Incoming::Publish { .. }) => self.acked(doing),
            Err(RecvTimeoutError::Timeout) => Err(TransportError::Timeout {
                port: self.port.clone(),
                method: format!("the broker ({doing})"),
                waited: CONNECT_TIMEOUT,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Closed { port: self.port.clone() }),
        }
    }

    pub fn call(&mut self, method: &str, params: Value, timeout: Duration) -> CallResult {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = Request::new(id, method, params);
        request.src = Some(self.src.clone());
        self.client
            .publish(mqtt::rpc_topic(&self.device_id), QoS::AtLeastOnce, false, request.to_json())
            .map_err(|e| TransportError::Io { port: self.port.clone(), reason: e.to_string() })?;
        let reply_topic = mqtt::reply_topic(&self.src);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(Incoming::Publish { topic, payload }) if topic == reply_topic => {
                    // A reply to an earlier call that timed out is skipped.
                    if let Ok(reply) = frame::parse_response(&payload)
                        && reply.id == Id::from(id)
                    {
                        return Ok(crate::rpc_client::outcome(reply.outcome));
                    }
                }
                Ok(Incoming::Publish { .. } | Incoming::Acked) => {}
                Ok(Incoming::Failed(reason)) => {
                    return Err(TransportError::Io { port: self.port.clone(), reason });
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(TransportError::Timeout {
                        port: self.port.clone(),
                        method: method.into(),
                        waited: timeout,
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(TransportError::Closed { port: self.port.clone() });
                }
            }
        }
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}

/// Sets TCP_NODELAY on the connection's socket.
fn no_delay(connection: &mut rumqttc::Connection) {
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    connection.eventloop.set_network_options(network);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mqtt_port_names_the_broker_and_the_device() {
        let parse = |port| parse_port(port);
        assert_eq!(parse("mqtt://127.0.0.1:18830/dev-1"), Some(("127.0.0.1".into(), 18830, "dev-1".into())));
        assert_eq!(parse("mqtt://broker/dev-1"), Some(("broker".into(), 1883, "dev-1".into())));
        assert_eq!(parse("mqtt://broker:1883"), None, "no device id");
        assert_eq!(parse("mqtt://broker:x/dev"), None);
        assert_eq!(parse("mqtt://broker/a/b"), None);
    }
}
