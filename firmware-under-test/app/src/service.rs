//! The RPC services (§5 of the reference, and `Sys.*`, `FS.*` as Mongoose OS has them): a method
//! and its params in, a result or an error out. Transport-free: the serial and HTTP channels
//! both call [`dispatch`].
//!
//! | method              | params                                        | result |
//! |---------------------|-----------------------------------------------|--------|
//! | `Sys.GetInfo`       | none                                          | `{app, fw_version, fw_id, arch, id, uptime_ms}` |
//! | `Sys.Reboot`        | `{delay_ms}` (at most one week)               | `null`, then a reboot |
//! | `Sys.Events`        | `{since}`                                     | `{events, next, dropped}`: the typed events numbered `since` and later since the firmware started (the console's `@ota` lines, for transports without a console) |
//! | `OTA.Status`        | none                                          | `{state, msg, progress_percent, is_committed, commit_timeout, partition}` |
//! | `OTA.Begin`         | `{timeout, commit_timeout, size, ignore_same_version}` | `null` |
//! | `OTA.Write`         | `{offset, data}` (base64)                     | `null`; an offset already received is acknowledged, not applied again; a gap is refused |
//! | `OTA.End`           | none                                          | `{state, msg}`; a reboot follows an applied update |
//! | `OTA.Update`        | `{url, commit_timeout, ignore_same_version}` or `{section, blob_url, commit_timeout}` | replied when the pull ends |
//! | `OTA.Commit`        | none                                          | `null`; −1 when already committed |
//! | `OTA.Revert`        | none                                          | `null`, then a reboot; −1 when committed |
//! | `OTA.GetBootState`  | none                                          | `{active_slot, is_committed, revert_slot, commit_timeout}` (`revert_slot` −1 for none) |
//! | `OTA.SetBootState`  | any of those four                             | `null`; −2 no field given, −3 not set |
//! | `OTA.CreateSnapshot`| `{set_as_revert, commit_timeout}`             | `{slot}` |
//! | `FS.Get`            | `{filename, offset, len}`                     | `{data, left}` (base64) |
//! | `FS.Put`            | `{filename, data, append}`                    | `null` |
//! | `FS.List`           | none                                          | `[name, ...]` |
//!
//! An unknown method is 404 "No handler for X"; malformed params are −1 "Malformed request: …",
//! and nothing is changed.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use base64::Engine as _;
use ota_core::control::{BootStatePatch, SnapshotOptions};
use ota_core::layout::Slot;
use ota_core::updater::UpdateOptions;
use serde_json::{Value, json};

use crate::app::{App, DELAY_MAX_MS, Flash, RpcError};
use crate::event::Source;

/// A pull the caller must carry out (it needs the network), replying when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    pub url: String,
    pub commit_timeout_s: u32,
    pub ignore_same_version: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Result(Value),
    Error(RpcError),
    /// `OTA.Update`: run the pull, then reply with its outcome.
    Pull(PullRequest),
}

impl From<Result<Value, RpcError>> for Reply {
    fn from(r: Result<Value, RpcError>) -> Reply {
        match r {
            Ok(v) => Reply::Result(v),
            Err(e) => Reply::Error(e),
        }
    }
}

fn malformed(what: impl core::fmt::Display) -> RpcError {
    RpcError::new(-1, format!("Malformed request: {what}"))
}

/// Reads an optional non-negative integer param.
fn uint(params: &Value, key: &str) -> Result<Option<u64>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_u64().map(Some).ok_or_else(|| malformed(format!("{key} must be a non-negative integer")))
        }
    }
}

fn seconds(params: &Value, key: &str) -> Result<Option<u32>, RpcError> {
    uint(params, key)?
        .map(|v| u32::try_from(v).map_err(|_| malformed(format!("{key} is too large"))))
        .transpose()
}

/// An optional boolean param; 0 and 1 are taken too, as query strings carry them.
fn flag(params: &Value, key: &str) -> Result<Option<bool>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) if v.as_u64() == Some(0) => Ok(Some(false)),
        Some(v) if v.as_u64() == Some(1) => Ok(Some(true)),
        Some(_) => Err(malformed(format!("{key} must be true or false"))),
    }
}

fn string<'a>(params: &'a Value, key: &str) -> Result<Option<&'a str>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("{key} must be a string"))),
    }
}

fn bytes_param(params: &Value, key: &str) -> Result<Vec<u8>, RpcError> {
    let text = string(params, key)?.ok_or_else(|| malformed(format!("{key} is required")))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| malformed(format!("{key} is not base64: {e}")))
}

/// The options of an update, whichever way it comes: `OTA.Begin`'s and `OTA.Update`'s params,
/// `POST /update`'s form fields (before or after the file), `/update?url=`'s query. One parser, so
/// a key means the same, with the same bounds and errors, on every transport.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateRequest {
    pub url: Option<String>,
    pub commit_timeout_s: Option<u32>,
    pub ignore_same_version: Option<bool>,
    /// `timeout`: an update with no progress for this long is abandoned.
    pub timeout_ms: Option<u64>,
    /// `size`: the bundle's size, for the progress.
    pub size: Option<u64>,
}

impl UpdateRequest {
    /// From JSON params (RPC). `blob_url` is the old name of `url`, with `section` "firmware".
    pub fn from_params(params: &Value) -> Result<UpdateRequest, RpcError> {
        if !params.is_object() && !params.is_null() {
            return Err(malformed("params must be an object"));
        }
        let url = match (string(params, "url")?, string(params, "blob_url")?) {
            (Some(url), _) | (None, Some(url)) if !url.is_empty() => Some(url.to_string()),
            _ => None,
        };
        if let Some(section) = string(params, "section")?
            && section != "firmware"
        {
            return Err(malformed(format!("section {section:?} is not \"firmware\"")));
        }
        let timeout_ms = match uint(params, "timeout")? {
            Some(s) if s > DELAY_MAX_MS / 1000 => {
                return Err(malformed(format!("timeout must be at most {} s", DELAY_MAX_MS / 1000)));
            }
            other => other.map(|s| s * 1000),
        };
        Ok(UpdateRequest {
            url,
            commit_timeout_s: seconds(params, "commit_timeout")?,
            ignore_same_version: flag(params, "ignore_same_version")?,
            timeout_ms,
            size: uint(params, "size")?,
        })
    }

    /// From text fields (a form, a query string): a value that reads as a JSON number or
    /// boolean is one; anything else is a string.
    pub fn from_text<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<UpdateRequest, RpcError> {
        let mut params = serde_json::Map::new();
        for (key, text) in fields {
            let text = text.trim();
            let value = match serde_json::from_str::<Value>(text) {
                Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::String(_))) => v,
                _ => Value::String(text.to_string()),
            };
            params.insert(key.to_string(), value);
        }
        UpdateRequest::from_params(&Value::Object(params))
    }

    /// The updater's options, with the transport's defaults for what the request leaves out.
    pub fn options(&self, commit_timeout_s: u32, ignore_same_version: bool) -> UpdateOptions {
        UpdateOptions {
            commit_timeout_s: self.commit_timeout_s.unwrap_or(commit_timeout_s),
            ignore_same_version: self.ignore_same_version.unwrap_or(ignore_same_version),
        }
    }
}

/// Carries out `method`.
pub fn dispatch<F: Flash>(
    app: &mut App<F>,
    method: &str,
    params: &Value,
    now_ms: u64,
    uptime_ms: u64,
) -> Reply {
    let params = if params.is_null() { &Value::Object(Default::default()) } else { params };
    if !params.is_object() {
        return Reply::Error(malformed("params must be an object"));
    }
    match method {
        "Sys.GetInfo" => Reply::Result(info(app, uptime_ms)),
        "Sys.Reboot" => uint(params, "delay_ms")
            .and_then(|delay| app.schedule_reboot(now_ms, delay.unwrap_or(100)))
            .map(|_| Value::Null)
            .into(),
        "Sys.Events" => uint(params, "since").map(|since| events(app, since.unwrap_or(0))).into(),
        "OTA.Status" => Reply::Result(app.status()),
        "OTA.Begin" => begin(app, params, now_ms).into(),
        "OTA.Write" => write(app, params, now_ms).into(),
        "OTA.End" => end(app, now_ms).into(),
        "OTA.Update" => pull(app, params),
        "OTA.Commit" => app.commit(now_ms).map(|_| Value::Null).into(),
        "OTA.Revert" => app.revert(now_ms).map(|_| Value::Null).into(),
        "OTA.GetBootState" => boot_state(app).into(),
        "OTA.SetBootState" => set_boot_state(app, params, now_ms).into(),
        "OTA.CreateSnapshot" => snapshot(app, params, now_ms).into(),
        "FS.Get" => fs_get(app, params).into(),
        "FS.Put" => fs_put(app, params).into(),
        "FS.List" => {
            app.list_files().map(|files| json!(files.into_iter().map(|(n, _)| n).collect::<Vec<_>>())).into()
        }
        other => Reply::Error(RpcError::new(404, format!("No handler for {other}"))),
    }
}

/// `Sys.GetInfo`, as Mongoose OS answers it (the fields the OTA tools read).
pub fn info<F: Flash>(app: &mut App<F>, uptime_ms: u64) -> Value {
    let (fw_version, fw_id) = app.version();
    let config = app.config();
    json!({
        "app": app.settings().app_name,
        "fw_version": fw_version,
        "fw_id": fw_id,
        "arch": app.settings().platform,
        "id": config.device_id,
        "mac": "",
        "uptime_ms": uptime_ms,
        "ota_slot": app.slot().index(),
    })
}

fn events<F: Flash>(app: &App<F>, since: u64) -> Value {
    let (events, dropped) = app.journal().since(since);
    json!({ "events": events, "next": app.journal().next(), "dropped": dropped })
}

fn begin<F: Flash>(app: &mut App<F>, params: &Value, now_ms: u64) -> Result<Value, RpcError> {
    let request = UpdateRequest::from_params(params)?;
    let options = request.options(0, false);
    app.update_begin(Source::Rpc, options, request.size, request.timeout_ms, now_ms)?;
    Ok(Value::Null)
}

fn write<F: Flash>(app: &mut App<F>, params: &Value, now_ms: u64) -> Result<Value, RpcError> {
    let offset = uint(params, "offset")?.ok_or_else(|| malformed("offset is required"))?;
    let data = bytes_param(params, "data")?;
    let id = rpc_session(app)?;
    app.update_write(id, offset, &data, now_ms)?;
    Ok(Value::Null)
}

/// The session `OTA.Begin` opened, or why there is none.
fn rpc_session<F: Flash>(app: &mut App<F>) -> Result<crate::app::SessionId, RpcError> {
    match (app.update_session_of(Source::Rpc), app.update_source()) {
        (Some(id), _) => Ok(id),
        (None, Some(_)) => Err(RpcError::new(-1, "Another update is in progress (not started by OTA.Begin)")),
        (None, None) => Err(RpcError::new(-1, "No update in progress; call OTA.Begin first")),
    }
}

/// `OTA.End`: ends the session `OTA.Begin` opened. A session another source opened (a push or
/// a pull) is aborted instead, as `OTA.Begin`'s refusal promises; its remaining bytes are then
/// refused, never written into a later session.
fn end<F: Flash>(app: &mut App<F>, now_ms: u64) -> Result<Value, RpcError> {
    if let (None, Some(source)) = (app.update_session_of(Source::Rpc), app.update_source()) {
        app.update_abort_any("Update aborted by OTA.End", now_ms);
        return Err(RpcError::new(
            -1,
            format!("Update aborted: the {source:?} update was stopped by OTA.End"),
        ));
    }
    let id = rpc_session(app)?;
    let finished = app.update_end(id, now_ms)?;
    Ok(json!({ "state": 3, "msg": finished.message() }))
}

fn pull<F: Flash>(app: &mut App<F>, params: &Value) -> Reply {
    let request = UpdateRequest::from_params(params).and_then(|request| {
        let url = request.url.clone().ok_or_else(|| malformed("url is required"))?;
        let options = request.options(app.config().update_commit_timeout_s, false);
        Ok(PullRequest {
            url,
            commit_timeout_s: options.commit_timeout_s,
            ignore_same_version: options.ignore_same_version,
        })
    });
    match request {
        Ok(request) => Reply::Pull(request),
        Err(e) => Reply::Error(e),
    }
}

fn boot_state<F: Flash>(app: &mut App<F>) -> Result<Value, RpcError> {
    let s = app.boot_state()?;
    Ok(json!({
        "active_slot": s.active.index(),
        "is_committed": s.committed,
        "revert_slot": s.revert.map_or(-1, |r| r.index() as i64),
        "commit_timeout": s.commit_timeout_s,
    }))
}

fn slot_param(params: &Value, key: &str) -> Result<Option<Option<Slot>>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(-1) => Ok(Some(None)),
            Some(n @ 0..=1) => Ok(Some(Slot::from_index(n as u32))),
            _ => Err(malformed(format!("{key} must be 0, 1 or -1"))),
        },
    }
}

fn set_boot_state<F: Flash>(app: &mut App<F>, params: &Value, now_ms: u64) -> Result<Value, RpcError> {
    let active_slot = match slot_param(params, "active_slot")? {
        Some(Some(slot)) => Some(slot),
        Some(None) => return Err(malformed("active_slot must be 0 or 1")),
        None => None,
    };
    let is_committed = match params.get("is_committed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_bool().ok_or_else(|| malformed("is_committed must be true or false"))?),
    };
    let patch = BootStatePatch {
        active_slot,
        revert_slot: slot_param(params, "revert_slot")?,
        is_committed,
        commit_timeout_s: seconds(params, "commit_timeout")?,
    };
    app.set_boot_state(&patch, now_ms)?;
    Ok(Value::Null)
}

fn snapshot<F: Flash>(app: &mut App<F>, params: &Value, now_ms: u64) -> Result<Value, RpcError> {
    let set_as_revert = match params.get("set_as_revert") {
        None | Some(Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| malformed("set_as_revert must be true or false"))?,
    };
    let options = SnapshotOptions { set_as_revert, commit_timeout_s: seconds(params, "commit_timeout")? };
    let slot = app.create_snapshot(&options, now_ms)?;
    Ok(json!({ "slot": slot.index() }))
}

fn fs_get<F: Flash>(app: &mut App<F>, params: &Value) -> Result<Value, RpcError> {
    let name = string(params, "filename")?.ok_or_else(|| malformed("filename is required"))?;
    let data = app.read_file(name)?.ok_or_else(|| RpcError::new(-2, format!("{name}: no such file")))?;
    let offset = (uint(params, "offset")?.unwrap_or(0) as usize).min(data.len());
    let len = uint(params, "len")?.map_or(data.len() - offset, |l| (l as usize).min(data.len() - offset));
    let piece = &data[offset..offset + len];
    Ok(json!({
        "data": base64::engine::general_purpose::STANDARD.encode(piece),
        "left": data.len() - offset - len,
    }))
}

fn fs_put<F: Flash>(app: &mut App<F>, params: &Value) -> Result<Value, RpcError> {
    let name = string(params, "filename")?.ok_or_else(|| malformed("filename is required"))?;
    let mut data = bytes_param(params, "data")?;
    if params.get("append").and_then(Value::as_bool) == Some(true)
        && let Some(mut old) = app.read_file(name)?
    {
        old.append(&mut data);
        data = old;
    }
    app.write_file(name, &data)?;
    Ok(Value::Null)
}
