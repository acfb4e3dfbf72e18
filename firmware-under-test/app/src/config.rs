//! The device configuration the OTA services read: `conf9.json` (the user layer of Mongoose OS's
//! configuration, §4 of the reference) on the running filesystem, over built-in defaults. Because
//! it lives on the filesystem, the first-boot merge carries it across updates.
//!
//! | key                      | default          | meaning |
//! |--------------------------|------------------|---------|
//! | `device.id`              | the build's id   | `src` of RPC replies, `X-MGOS-Device-ID` |
//! | `update.url`             | none             | where polling pulls from |
//! | `update.interval`        | 0 (no polling)   | seconds between polls |
//! | `update.commit_timeout`  | 0                | commit timeout for polled and pulled updates |
//! | `update.timeout`         | 600              | an update with no progress for this long is abandoned |
//! | `update.enable_post`     | true             | whether `POST /update` takes bundles |
//! | `update.extra_http_headers` | none          | extra request headers for pulls, `"Name: value"` pairs separated by CR LF |
//! | `mqtt.enable`            | false            | whether the port connects to an MQTT broker |
//! | `mqtt.server`            | none             | the broker, `HOST:PORT` (1883 when no port is given) |
//! | `mqtt.client_id`         | `device.id`      | the MQTT client id |
//! | `mqtt.user`, `mqtt.pass` | none             | the broker's credentials |
//! | `rpc.mqtt.qos`           | 1                | QoS of RPC replies (0, 1 or 2) |
//! | `shadow.ota_enable`      | true             | whether the shadow's `desired.ota.url` starts updates (§6.3) |
//! | `shadow.autocommit`      | false            | commit an uncommitted image once the shadow connects again |
//! | `wifi.sta.enable`        | false            | whether a port with a radio joins a Wi-Fi network as a station |
//! | `wifi.sta.ssid`, `wifi.sta.pass` | none     | the network, and its password (none: an open network) |

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::app::{DELAY_MAX_MS, Settings};

pub const USER_FILE: &str = "conf9.json";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub device_id: String,
    pub update_url: Option<String>,
    pub update_interval_s: u64,
    pub update_commit_timeout_s: u32,
    pub update_timeout_s: u64,
    pub update_enable_post: bool,
    pub update_extra_http_headers: Vec<(String, String)>,
    pub mqtt: MqttConfig,
    pub shadow_ota_enable: bool,
    pub shadow_autocommit: bool,
    pub wifi_sta: WifiStaConfig,
    /// Why `conf9.json` was ignored, when it was.
    pub problem: Option<String>,
}

impl Config {
    /// The defaults overlaid with `conf9.json`'s content (`None`: the file is absent). A file
    /// that is not a JSON object is ignored as a whole, and the reason kept in `problem`.
    pub fn from_user_file(user: Option<&[u8]>, settings: &Settings) -> Config {
        let mut config = Config {
            device_id: settings.default_device_id.clone(),
            update_url: None,
            update_interval_s: 0,
            update_commit_timeout_s: 0,
            update_timeout_s: settings.update_timeout_ms / 1000,
            update_enable_post: true,
            update_extra_http_headers: Vec::new(),
            mqtt: MqttConfig {
                enable: false,
                server: None,
                client_id: settings.default_device_id.clone(),
                user: None,
                pass: None,
                rpc_qos: ota_proto::mqtt::RPC_QOS_DEFAULT,
            },
            shadow_ota_enable: true,
            shadow_autocommit: false,
            wifi_sta: WifiStaConfig::default(),
            problem: None,
        };
        let Some(bytes) = user else { return config };
        let json: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            Ok(_) => return Config { problem: Some(format!("{USER_FILE} is not a JSON object")), ..config },
            Err(e) => return Config { problem: Some(format!("{USER_FILE}: {e}")), ..config },
        };
        if let Some(id) = json.pointer("/device/id").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
            config.device_id = id.to_string();
        }
        let update = |key: &str| json.pointer(&format!("/update/{key}"));
        config.update_url =
            update("url").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
        let bound_s = DELAY_MAX_MS / 1000;
        match update("interval").and_then(|v| v.as_u64()) {
            Some(s) if s > bound_s => {
                config.problem =
                    Some(format!("update.interval {s} is over {bound_s} s (one week): polling is off"));
            }
            other => config.update_interval_s = other.unwrap_or(0),
        }
        config.update_commit_timeout_s =
            update("commit_timeout").and_then(|v| v.as_u64()).map_or(0, |v| v.min(u32::MAX as u64) as u32);
        match update("timeout").and_then(|v| v.as_u64()) {
            Some(t) if t > bound_s => {
                config.problem =
                    Some(format!("update.timeout {t} is over {bound_s} s (one week): the default stays"));
            }
            Some(t) => config.update_timeout_s = t,
            None => {}
        }
        if let Some(b) = update("enable_post").and_then(|v| v.as_bool()) {
            config.update_enable_post = b;
        }
        if let Some(h) = update("extra_http_headers").and_then(|v| v.as_str()) {
            config.update_extra_http_headers = h
                .split("\r\n")
                .filter_map(|line| line.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
        }
        config.mqtt_from(&json);
        let flag = |key: &str| json.pointer(key).and_then(|v| v.as_bool());
        config.shadow_ota_enable = flag("/shadow/ota_enable").unwrap_or(true);
        config.shadow_autocommit = flag("/shadow/autocommit").unwrap_or(false);
        let text = |key: &str| json.pointer(key).and_then(|v| v.as_str()).map(str::to_string);
        config.wifi_sta = WifiStaConfig {
            enable: flag("/wifi/sta/enable").unwrap_or(false),
            ssid: text("/wifi/sta/ssid"),
            pass: text("/wifi/sta/pass"),
        };
        config
    }

    /// `mqtt.*` and `rpc.mqtt.qos`; the client id follows `device.id` unless set.
    fn mqtt_from(&mut self, json: &serde_json::Value) {
        let text = |key: &str| {
            json.pointer(key).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string)
        };
        let mqtt = &mut self.mqtt;
        mqtt.enable = json.pointer("/mqtt/enable").and_then(|v| v.as_bool()).unwrap_or(false);
        mqtt.server = text("/mqtt/server");
        mqtt.client_id = text("/mqtt/client_id").unwrap_or_else(|| self.device_id.clone());
        mqtt.user = text("/mqtt/user");
        mqtt.pass = text("/mqtt/pass");
        match json.pointer("/rpc/mqtt/qos").and_then(|v| v.as_u64()) {
            Some(q) if q > 2 => self.problem = Some(format!("rpc.mqtt.qos {q} is not 0, 1 or 2: 1 stays")),
            Some(q) => mqtt.rpc_qos = q as u8,
            None => {}
        }
    }
}

/// The MQTT channel's settings (`mqtt.*`, `rpc.mqtt.qos`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttConfig {
    pub enable: bool,
    pub server: Option<String>,
    pub client_id: String,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub rpc_qos: u8,
}

/// The Wi-Fi station's settings (`wifi.sta.*`), as Mongoose OS names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WifiStaConfig {
    pub enable: bool,
    pub ssid: Option<String>,
    pub pass: Option<String>,
}

impl WifiStaConfig {
    /// The network to join and its password (empty: an open network), or `None` when the station
    /// is off or names no network: then a port leaves its radio off.
    pub fn network(&self) -> Option<(&str, &str)> {
        let ssid = self.ssid.as_deref().filter(|s| !s.is_empty())?;
        self.enable.then(|| (ssid, self.pass.as_deref().unwrap_or("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf9_overlays_the_defaults() {
        let settings = Settings::default();
        let config = Config::from_user_file(
            Some(br#"{"device": {"id": "site-7"}, "update": {"url": "http://127.0.0.1:9/fw.zip", "interval": 60, "commit_timeout": 300}}"#),
            &settings,
        );
        assert_eq!(config.device_id, "site-7");
        assert_eq!(config.update_url.as_deref(), Some("http://127.0.0.1:9/fw.zip"));
        assert_eq!((config.update_interval_s, config.update_commit_timeout_s), (60, 300));
        assert!(config.update_enable_post && config.problem.is_none());
        let broken = Config::from_user_file(Some(b"{not json"), &settings);
        assert_eq!(broken.device_id, "virtual-board");
        assert!(broken.problem.unwrap().starts_with("conf9.json: "));
    }

    #[test]
    fn mqtt_and_shadow_keys_overlay_their_defaults() {
        let settings = Settings::default();
        let defaults = Config::from_user_file(None, &settings);
        assert!(!defaults.mqtt.enable && defaults.shadow_ota_enable && !defaults.shadow_autocommit);
        assert_eq!((defaults.mqtt.client_id.as_str(), defaults.mqtt.rpc_qos), ("virtual-board", 1));
        let config = Config::from_user_file(
            Some(br#"{"device": {"id": "d7"}, "mqtt": {"enable": true, "server": "127.0.0.1:1883", "user": "u", "pass": "p"},
                     "rpc": {"mqtt": {"qos": 0}}, "shadow": {"ota_enable": false, "autocommit": true}}"#),
            &settings,
        );
        assert!(config.mqtt.enable && !config.shadow_ota_enable && config.shadow_autocommit);
        assert_eq!(config.mqtt.server.as_deref(), Some("127.0.0.1:1883"));
        assert_eq!((config.mqtt.client_id.as_str(), config.mqtt.rpc_qos), ("d7", 0));
        assert_eq!((config.mqtt.user.as_deref(), config.mqtt.pass.as_deref()), (Some("u"), Some("p")));
    }

    #[test]
    fn wifi_sta_names_a_network_only_when_enabled_with_an_ssid() {
        let settings = Settings::default();
        let sta = |json: &[u8]| Config::from_user_file(Some(json), &settings).wifi_sta;
        assert_eq!(Config::from_user_file(None, &settings).wifi_sta.network(), None);
        let joined = sta(br#"{"wifi": {"sta": {"enable": true, "ssid": "hil-lab", "pass": "secret"}}}"#);
        assert_eq!(joined.network(), Some(("hil-lab", "secret")));
        assert_eq!(
            sta(br#"{"wifi": {"sta": {"enable": true, "ssid": "open"}}}"#).network(),
            Some(("open", ""))
        );
        // The seeds' conf9.json names a network without enabling the station: the radio stays off.
        assert_eq!(sta(br#"{"wifi": {"sta": {"ssid": "site-7"}}}"#).network(), None);
        assert_eq!(sta(br#"{"wifi": {"sta": {"enable": true, "ssid": ""}}}"#).network(), None);
        assert_eq!(sta(br#"{"wifi": {"sta": {"enable": false, "ssid": "x", "pass": "y"}}}"#).network(), None);
    }
}
