//! Mongoose OS's MQTT channel (§7 of the reference) and the AWS IoT shadow documents of
//! ota-shadow (§6.3): topic names, the RPC envelope rules and the shadow documents, without a
//! socket. The virtual board's client and the runner's `--port mqtt://` share them.
//!
//! | topic | who publishes | payload |
//! |-------|---------------|---------|
//! | `<device.id>/rpc` | a client | a whole request frame |
//! | `<device.id>/rpc/<Method>` | a client | a frame; the topic's suffix is the method when the frame has none |
//! | `<src>/rpc` | the device | the reply frame, `dst` = the request's `src` |
//! | `$aws/things/<id>/shadow/update/delta` | the shadow service (retained) | `{"state": {"ota": {"url": U}}}` |
//! | `$aws/things/<id>/shadow/get/accepted` | the shadow service | `{"state": {"desired": …, "delta": …}}` |
//! | `$aws/things/<id>/shadow/update` | the device (retained) | `{"state": {"reported": {"ota": {"url", "code", "message"}}}}` |
//!
//! A plain broker has no shadow service, so whoever sets the desired state (the runner's
//! `shadow` step) publishes the delta itself, retained: a device that is offline at that moment
//! finds it when it subscribes, which is the promise of ota-shadow. The device clears the delta
//! (an empty retained message) once the update it asked for is committed, as the service drops a
//! delta when the reported state matches; a failure leaves it, so the next connection retries.

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

use serde_json::{Value, json};

use crate::rpc::frame::{self, FrameError, Request};

/// `rpc.mqtt.qos`'s default.
pub const RPC_QOS_DEFAULT: u8 = 1;

/// The topic a device takes whole frames on: `<device.id>/rpc`.
pub fn rpc_topic(device_id: &str) -> String {
    format!("{device_id}/rpc")
}

/// The two topics a device subscribes to: `<device.id>/rpc` and `<device.id>/rpc/#`.
pub fn rpc_sub_topics(device_id: &str) -> [String; 2] {
    [rpc_topic(device_id), format!("{device_id}/rpc/#")]
}

/// Where the reply to a request from `src` goes: `<src>/rpc`.
pub fn reply_topic(src: &str) -> String {
    format!("{src}/rpc")
}

/// The `src` `mos` uses over MQTT, `<device id>/rpc-resp/<client id>`: its replies come back on
/// `<device id>/rpc-resp/<client id>/rpc`.
pub fn client_src(device_id: &str, client_id: &str) -> String {
    format!("{device_id}/rpc-resp/{client_id}")
}

/// Why a message on an RPC topic runs nothing and gets no reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Dropped {
    /// The topic is not one of the device's RPC topics.
    NotOurTopic,
    /// A request with an id but no `src`: there is nowhere to reply, and Mongoose OS drops it.
    NoSrc,
    /// `dst` names another device ("Wrong dst").
    WrongDst,
    /// The payload is not a request frame.
    BadFrame(FrameError),
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dropped::NotOurTopic => write!(f, "not one of this device's rpc topics; dropped"),
            Dropped::NoSrc => write!(f, "a request with an id but no src has nowhere to reply; dropped"),
            Dropped::WrongDst => write!(f, "Wrong dst; dropped"),
            Dropped::BadFrame(e) => write!(f, "not a request frame: {e}; dropped"),
        }
    }
}

/// The request a message on `topic` carries for `device_id`, or why it is dropped. On
/// `<id>/rpc/<Method>` the suffix is the method of a frame that names none.
pub fn rpc_request(device_id: &str, topic: &str, payload: &[u8]) -> Result<Request, Dropped> {
    let rest =
        topic.strip_prefix(device_id).and_then(|t| t.strip_prefix("/rpc")).ok_or(Dropped::NotOurTopic)?;
    let suffix = match rest {
        "" => None,
        rest => Some(rest.strip_prefix('/').filter(|s| !s.is_empty()).ok_or(Dropped::NotOurTopic)?),
    };
    let request = match (frame::parse_request(payload), suffix) {
        (Ok(request), _) => request,
        (Err(FrameError::NoMethod { .. }), Some(method)) => {
            let mut object: serde_json::Map<String, Value> =
                serde_json::from_slice(payload).map_err(|_| Dropped::NotOurTopic)?;
            object.insert("method".into(), Value::String(method.into()));
            let bytes = serde_json::to_vec(&object).map_err(|_| Dropped::NotOurTopic)?;
            frame::parse_request(&bytes).map_err(Dropped::BadFrame)?
        }
        (Err(e), _) => return Err(Dropped::BadFrame(e)),
    };
    if request.id.is_some() && request.src.as_deref().is_none_or(str::is_empty) {
        return Err(Dropped::NoSrc);
    }
    if !frame::dst_is_local(&request, device_id) {
        return Err(Dropped::WrongDst);
    }
    Ok(request)
}

/// One of the AWS IoT shadow topics ota-shadow uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowTopic {
    Update,
    UpdateDelta,
    Get,
    GetAccepted,
}

/// `$aws/things/<id>/shadow/update`, `…/update/delta`, `…/get`, `…/get/accepted`.
pub fn shadow_topic(device_id: &str, which: ShadowTopic) -> String {
    let tail = match which {
        ShadowTopic::Update => "update",
        ShadowTopic::UpdateDelta => "update/delta",
        ShadowTopic::Get => "get",
        ShadowTopic::GetAccepted => "get/accepted",
    };
    format!("$aws/things/{device_id}/shadow/{tail}")
}

/// Which shadow topic `topic` is, for `device_id`.
pub fn parse_shadow_topic(device_id: &str, topic: &str) -> Option<ShadowTopic> {
    [ShadowTopic::Update, ShadowTopic::UpdateDelta, ShadowTopic::Get, ShadowTopic::GetAccepted]
        .into_iter()
        .find(|&which| shadow_topic(device_id, which) == topic)
}

/// A shadow document the device cannot read. Nothing is started; the running firmware stays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowDocError {
    NotJson { detail: String },
    NoState,
    UrlNotAString,
}

impl fmt::Display for ShadowDocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShadowDocError::NotJson { detail } => {
                write!(f, "malformed shadow document (not a JSON object: {detail})")
            }
            ShadowDocError::NoState => write!(f, "malformed shadow document (no `state` object)"),
            ShadowDocError::UrlNotAString => {
                write!(f, "malformed shadow document (`ota.url` is not a string)")
            }
        }?;
        write!(f, "; no update started, the running firmware stays")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ShadowDocError {}

/// The desired `ota.url` a delta (`{"state": {"ota": …}}`) or a `get/accepted` document
/// (`{"state": {"delta": {"ota": …}}}`) carries. An empty payload (a cleared retained delta) and
/// a document without `ota.url` carry none.
pub fn desired_url(which: ShadowTopic, payload: &[u8]) -> Result<Option<String>, ShadowDocError> {
    if payload.is_empty() {
        return Ok(None);
    }
    let doc: Value =
        serde_json::from_slice(payload).map_err(|e| ShadowDocError::NotJson { detail: e.to_string() })?;
    let Value::Object(_) = doc else {
        return Err(ShadowDocError::NotJson { detail: "a JSON value that is not an object".into() });
    };
    let state = doc.get("state").filter(|s| s.is_object()).ok_or(ShadowDocError::NoState)?;
    let delta = match which {
        ShadowTopic::GetAccepted => match state.get("delta") {
            Some(delta) => delta,
            None => return Ok(None),
        },
        _ => state,
    };
    match delta.pointer("/ota/url") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(url)) if url.is_empty() => Ok(None),
        Some(Value::String(url)) => Ok(Some(url.clone())),
        Some(_) => Err(ShadowDocError::UrlNotAString),
    }
}

/// The delta the shadow service would send for a desired `ota.url`.
pub fn delta_doc(url: &str) -> String {
    json!({"state": {"ota": {"url": url}}}).to_string()
}

/// What the device reports under `ota` (§6.3): the URL it acts on, a code (negative: failed; 0:
/// done; positive: in progress) and Mongoose OS's status message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtaReport {
    pub url: String,
    pub code: i64,
    pub message: String,
}

impl OtaReport {
    /// `{"state": {"reported": {"ota": {"url", "code", "message"}}}}`.
    pub fn to_doc(&self) -> String {
        json!({"state": {"reported": {"ota": {"url": self.url, "code": self.code, "message": self.message}}}})
            .to_string()
    }

    /// Reads a reported document back (the runner's expectation on the reported state).
    pub fn from_doc(payload: &[u8]) -> Result<OtaReport, ShadowDocError> {
        let doc: Value =
            serde_json::from_slice(payload).map_err(|e| ShadowDocError::NotJson { detail: e.to_string() })?;
        let ota = doc.pointer("/state/reported/ota").ok_or(ShadowDocError::NoState)?;
        Ok(OtaReport {
            url: ota.get("url").and_then(Value::as_str).unwrap_or_default().into(),
            code: ota.get("code").and_then(Value::as_i64).unwrap_or_default(),
            message: ota.get("message").and_then(Value::as_str).unwrap_or_default().into(),
        })
    }
}
