//! One serial port's RPC channel: Mongoose OS's framing (`ota_proto::rpc::uart`, exactly as the
//! QEMU port uses it) around `ota_app::service`. The port has two, USB-Serial-JTAG and UART0,
//! each with its own decoder and framing style; the bytes come from the chip's drivers and the
//! replies go back to the port the request came on. [`frame_reply`] answers `POST /rpc`'s frames
//! the same way, and [`call`] `/rpc/<Method>`.

use alloc::string::String;
use alloc::vec::Vec;

use ota_app::app::{App, RpcError};
use ota_app::service::{self, PullRequest, Reply};
use ota_proto::rpc::frame::{self, FrameError, Request, Response};
use ota_proto::rpc::uart::{DEFAULT_MAX_FRAME_BYTES, Decoder, Encoder, Item};
use serde_json::Value;

/// How the port runs the pull a method asks for (`OTA.Update` with a URL): its outcome's
/// message. Given as `None` when the board has no network (Wi-Fi off), and the method is refused.
pub type Pull<'a, F> = dyn FnMut(&mut App<F>, &PullRequest) -> Result<&'static str, RpcError> + 'a;

/// A method of the application's services, the pull it asks for run through `pull`.
pub fn call<F: ota_app::Flash>(
    app: &mut App<F>,
    method: &str,
    params: &Value,
    now_ms: u64,
    pull: Option<&mut Pull<'_, F>>,
) -> Result<Value, RpcError> {
    match service::dispatch(app, method, params, now_ms, now_ms) {
        Reply::Result(value) => Ok(value),
        Reply::Error(e) => Err(e),
        Reply::Pull(request) => match pull {
            Some(pull) => ota_app::web::pull_result(pull(app, &request)),
            None => {
                Err(RpcError::new(-1, "this board has no network (wifi.sta is off): nothing to pull over"))
            }
        },
    }
}

/// One RPC frame's reply, none for a notification or another device's frame, or the error for
/// bytes that are not a request and get no error frame.
pub fn frame_reply<F: ota_app::Flash>(
    app: &mut App<F>,
    json: &[u8],
    now_ms: u64,
    pull: Option<&mut Pull<'_, F>>,
) -> Result<Option<String>, FrameError> {
    let id = app.config().device_id;
    let request = match frame::parse_request(json) {
        Ok(request) => request,
        Err(error) => {
            return match Response::bad_request(&error, &id) {
                Some(response) => Ok(Some(response.to_json())),
                None => Err(error),
            };
        }
    };
    if !frame::dst_is_local(&request, &id) {
        return Ok(None);
    }
    let outcome = call(app, &request.method, &request.params, now_ms, pull);
    Ok(reply(&request, &id, outcome).map(|r| r.to_json()))
}

fn reply(request: &Request, id: &str, outcome: Result<Value, RpcError>) -> Option<Response> {
    match outcome {
        Ok(value) => Response::ok(request, id, value),
        Err(e) if e.code == 404 => Response::no_handler(request, id),
        Err(e) => Response::error(request, id, e.code as i64, e.message),
    }
}

/// A serial port's decoder and reply framing.
pub struct Channel {
    decoder: Decoder,
    encoder: Encoder,
}

impl Default for Channel {
    fn default() -> Self {
        Channel { decoder: Decoder::new(DEFAULT_MAX_FRAME_BYTES), encoder: Encoder::new() }
    }
}

impl Channel {
    /// Feeds the bytes read from the port; returns what to write back to it. `now_ms` is device
    /// time, for the methods and the events they stamp. A pull is refused: see [`Channel::feed_pulling`].
    pub fn feed<F: ota_app::Flash>(&mut self, app: &mut App<F>, bytes: &[u8], now_ms: u64) -> Vec<u8> {
        self.feed_pulling(app, bytes, now_ms, None)
    }

    /// [`Channel::feed`], with the pulls that methods ask for run through `pull`.
    pub fn feed_pulling<F: ota_app::Flash>(
        &mut self,
        app: &mut App<F>,
        bytes: &[u8],
        now_ms: u64,
        mut pull: Option<&mut Pull<'_, F>>,
    ) -> Vec<u8> {
        let mut items = Vec::new();
        self.decoder.feed(bytes, |item| items.push(item));
        let mut out = Vec::new();
        for item in items {
            if let Some(reply) = item.device_reply() {
                out.extend_from_slice(reply);
                continue;
            }
            let Item::Frame { json, style } = item else { continue };
            // Bytes that are not a request and get no error frame are dropped on the serial line.
            if let Ok(Some(reply)) = frame_reply(app, &json, now_ms, pull.as_deref_mut()) {
                out.extend(self.encoder.encode(reply.as_bytes(), style));
            }
        }
        out
    }
}
