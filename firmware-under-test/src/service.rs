//! The RPC services (§5 of the reference, and `Sys.*`, `FS.*` as Mongoose OS has them): a method
//! and its params in, a result or an error out. Transport-free: the serial and HTTP channels
//! both call [`dispatch`].
//!
//! | method              | params                                        | result |
//! |---------------------|-----------------------------------------------|--------|
//! | `Sys.GetInfo`       | none                                          | `{app, fw_version, fw_id, arch, id, uptime_ms}` |
//! | `Sys.Reboot`        | `{delay_ms}`                                  | `null`, then a reboot |
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

use base64::Engine as _;
use embedded_storage::nor_flash::NorFlash;
use ota_core::control::{BootStatePatch, SnapshotOptions};
use ota_core::layout::Slot;
use ota_core::updater::UpdateOptions;
use serde_json::{Value, json};

use crate::app::{App, RpcError, Source};

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

fn malformed(what: impl std::fmt::Display) -> RpcError {
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

/// Carries out `method`.
pub fn dispatch<F: NorFlash>(
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
            .map(|delay| {
                app.schedule_reboot(now_ms, delay.unwrap_or(100));
                Value::Null
            })
            .into(),
        "OTA.Status" => Reply::Result(app.status()),
        "OTA.Begin" => begin(app, params, now_ms).into(),
        "OTA.Write" => write(app, params, now_ms).into(),
        "OTA.End" => end(app, now_ms).into(),
        "OTA.Update" => pull(app, params),
        "OTA.Commit" => app.commit().map(|_| Value::Null).into(),
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
pub fn info<F: NorFlash>(app: &mut App<F>, uptime_ms: u64) -> Value {
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

fn begin<F: NorFlash>(app: &mut App<F>, params: &Value, now_ms: u64) -> Result<Value, RpcError> {
    let timeout_s = uint(params, "timeout")?;
    let commit_timeout_s = seconds(params, "commit_timeout")?.unwrap_or(0);
    let size = uint(params, "size")?;
    let ignore_same_version = flag(params, "ignore_same_version")?.unwrap_or(false);
    let options = UpdateOptions { commit_timeout_s, ignore_same_version };
    app.update_begin(Source::Rpc, options, size, timeout_s.map(|s| s * 1000), now_ms)?;
    Ok(Value::Null)
}

fn write<F: NorFlash>(app: &mut App<F>, params: &Value, now_ms: u64) -> Result<Value, RpcError> {
    let offset = uint(params, "offset")?.ok_or_else(|| malformed("offset is required"))?;
    let data = bytes_param(params, "data")?;
    if app.update_source().is_some_and(|s| s != Source::Rpc) {
        return Err(RpcError::new(-1, "Another update is in progress (not started by OTA.Begin)"));
    }
    app.update_write(offset, &data, now_ms)?;
    Ok(Value::Null)
}

fn end<F: NorFlash>(app: &mut App<F>, now_ms: u64) -> Result<Value, RpcError> {
    let finished = app.update_end(now_ms)?;
    Ok(json!({ "state": 3, "msg": finished.message() }))
}

fn pull<F: NorFlash>(app: &mut App<F>, params: &Value) -> Reply {
    let request = (|| {
        let url = match (string(params, "url")?, string(params, "blob_url")?) {
            (Some(url), _) | (None, Some(url)) if !url.is_empty() => url.to_string(),
            _ => return Err(malformed("url is required")),
        };
        if let Some(section) = string(params, "section")?
            && section != "firmware"
        {
            return Err(malformed(format!("section {section:?} is not \"firmware\"")));
        }
        let commit_timeout_s =
            seconds(params, "commit_timeout")?.unwrap_or(app.config().update_commit_timeout_s);
        let ignore_same_version = flag(params, "ignore_same_version")?.unwrap_or(false);
        Ok(PullRequest { url, commit_timeout_s, ignore_same_version })
    })();
    match request {
        Ok(request) => Reply::Pull(request),
        Err(e) => Reply::Error(e),
    }
}

fn boot_state<F: NorFlash>(app: &mut App<F>) -> Result<Value, RpcError> {
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

fn set_boot_state<F: NorFlash>(app: &mut App<F>, params: &Value, now_ms: u64) -> Result<Value, RpcError> {
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

fn snapshot<F: NorFlash>(app: &mut App<F>, params: &Value, now_ms: u64) -> Result<Value, RpcError> {
    let set_as_revert = match params.get("set_as_revert") {
        None | Some(Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| malformed("set_as_revert must be true or false"))?,
    };
    let options = SnapshotOptions { set_as_revert, commit_timeout_s: seconds(params, "commit_timeout")? };
    let slot = app.create_snapshot(&options, now_ms)?;
    Ok(json!({ "slot": slot.index() }))
}

fn fs_get<F: NorFlash>(app: &mut App<F>, params: &Value) -> Result<Value, RpcError> {
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

fn fs_put<F: NorFlash>(app: &mut App<F>, params: &Value) -> Result<Value, RpcError> {
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
