//! One RPC frame in, its reply out: shared by the serial channel and `POST /rpc`.

use serde_json::Value;

use super::{SharedDevice, lock};
use crate::app::RpcError;
use crate::rpc::frame::{self, FrameError, Request, Response};
use crate::service::{self, Reply};

/// The device id replies carry: `device.id` from `conf9.json`, or the build's.
pub fn device_id(device: &SharedDevice) -> String {
    let mut d = lock(device);
    let fallback = d.settings_device_id();
    d.with_app(|app, _| app.config().device_id).unwrap_or(fallback)
}

/// Handles a frame's JSON and hands the reply (if any: notifications get none) to `reply`,
/// possibly later and from another thread (a pull replies when it ends). Bytes that are not a
/// request and get no reply frame come back as the error, for a transport that must still answer
/// (`POST /rpc`); the serial line drops them.
pub fn handle_frame(
    device: &SharedDevice,
    json: &[u8],
    reply: impl FnOnce(String) + Send + 'static,
) -> Result<(), FrameError> {
    let id = device_id(device);
    let request = match frame::parse_request(json) {
        Ok(request) => request,
        Err(error) => {
            let Some(response) = Response::bad_request(&error, &id) else { return Err(error) };
            reply(response.to_json());
            return Ok(());
        }
    };
    if !frame::dst_is_local(&request, &id) {
        eprintln!("virtual-board: Wrong dst {:?}", request.dst);
        return Ok(());
    }
    match call(device, &request.method, &request.params) {
        Reply::Pull(pull) => {
            let device = device.clone();
            std::thread::spawn(move || {
                let outcome = super::pull::run(&device, &pull);
                if let Some(response) =
                    respond(&request, &id, outcome.map(|m| serde_json::json!({"state": 3, "msg": m})))
                {
                    reply(response.to_json());
                }
            });
        }
        Reply::Result(value) => {
            if let Some(response) = respond(&request, &id, Ok(value)) {
                reply(response.to_json());
            }
        }
        Reply::Error(e) => {
            if let Some(response) = respond(&request, &id, Err(e)) {
                reply(response.to_json());
            }
        }
    }
    Ok(())
}

/// Runs a method on the device; a device that is hung or bricked answers with an error. The
/// board's own methods (`Board.*`, for a test rig) answer whatever the firmware does.
pub fn call(device: &SharedDevice, method: &str, params: &Value) -> Reply {
    if let Some(reply) = board_method(device, method, params) {
        return reply;
    }
    let mut d = lock(device);
    let uptime = d.clock.now_ms();
    match d.with_app(|app, now| service::dispatch(app, method, params, now, uptime)) {
        Ok(reply) => reply,
        Err(e) => Reply::Error(e),
    }
}

fn respond(request: &Request, id: &str, outcome: Result<Value, RpcError>) -> Option<Response> {
    match outcome {
        Ok(value) => Response::ok(request, id, value),
        Err(e) if e.code == 404 => Response::no_handler(request, id),
        Err(e) => Response::error(request, id, e.code as i64, e.message),
    }
}

/// The virtual board's own methods, which a real board has as wires, not as RPC:
///
/// | method        | params                                   | result |
/// |---------------|------------------------------------------|--------|
/// | `Board.Clock` | `{"freeze": true}`, `{"resume": true}` or `{"advance_ms": N}` | `{now_ms, frozen}` |
/// | `Board.CutAtOp` | `{op, when}`: the power goes at the `op`-th mutating flash operation from now (0: the next), `before`, `during` or `after` it | `null` |
/// | `Board.CutAtPhase` | `{phase}`: write, finalize, boot, merge, commit, revert, snapshot | `null`; the first flash operation after the phase starts dies half done, as a power cut |
fn board_method(device: &SharedDevice, method: &str, params: &Value) -> Option<Reply> {
    let reply = match method {
        "Board.Clock" => {
            let mut d = lock(device);
            if params.get("freeze").and_then(Value::as_bool) == Some(true) {
                d.clock.freeze();
            }
            if params.get("resume").and_then(Value::as_bool) == Some(true) {
                d.clock.resume();
            }
            if let Some(ms) = params.get("advance_ms") {
                let Some(ms) = ms.as_u64().filter(|&ms| ms <= ota_app::app::DELAY_MAX_MS) else {
                    let bound = ota_app::app::DELAY_MAX_MS;
                    return Some(Reply::Error(RpcError::new(-1, format!("advance_ms must be 0 to {bound}"))));
                };
                let (_, pulls) = d.advance(ms);
                for pull in pulls {
                    let device = device.clone();
                    std::thread::spawn(move || super::pull::run(&device, &pull));
                }
            }
            Reply::Result(serde_json::json!({"now_ms": d.clock.now_ms(), "frozen": d.clock.is_frozen()}))
        }
        "Board.CutAtOp" => {
            let op = params.get("op").and_then(Value::as_u64);
            let when = match params.get("when").and_then(Value::as_str).unwrap_or("during") {
                "before" => Some(crate::file_flash::CutWhen::Before),
                "during" => Some(crate::file_flash::CutWhen::During),
                "after" => Some(crate::file_flash::CutWhen::After),
                _ => None,
            };
            match (op, when) {
                (Some(op), Some(when)) => {
                    lock(device).arm_cut_after(op, when);
                    Reply::Result(Value::Null)
                }
                _ => Reply::Error(RpcError::new(
                    -1,
                    "Malformed request: op is a non-negative integer, when is before, during or after",
                )),
            }
        }
        "Board.CutAtPhase" => {
            let phase = params.get("phase").cloned().map(serde_json::from_value::<ota_app::Phase>);
            match phase {
                Some(Ok(phase)) => {
                    lock(device).arm_cut_at_phase(phase);
                    Reply::Result(Value::Null)
                }
                _ => Reply::Error(RpcError::new(
                    -1,
                    "Malformed request: phase is one of write, finalize, boot, merge, commit, revert, snapshot",
                )),
            }
        }
        _ => return None,
    };
    Some(reply)
}
