//! One serial port's RPC channel: Mongoose OS's framing (`ota_proto::rpc::uart`, exactly as the
//! QEMU port uses it) around `ota_app::service`. The port has two, USB-Serial-JTAG and UART0,
//! each with its own decoder and framing style; the bytes come from the chip's drivers and the
//! replies go back to the port the request came on.

use alloc::vec::Vec;

use ota_app::app::{App, RpcError};
use ota_app::service::{self, Reply};
use ota_proto::rpc::frame::{self, Response};
use ota_proto::rpc::uart::{DEFAULT_MAX_FRAME_BYTES, Decoder, Encoder, Item};
use serde_json::Value;

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
    /// time, for the methods and the events they stamp.
    pub fn feed<F: ota_app::Flash>(&mut self, app: &mut App<F>, bytes: &[u8], now_ms: u64) -> Vec<u8> {
        let mut items = Vec::new();
        self.decoder.feed(bytes, |item| items.push(item));
        let mut out = Vec::new();
        for item in items {
            self.answer(app, item, now_ms, &mut out);
        }
        out
    }

    fn answer<F: ota_app::Flash>(&mut self, app: &mut App<F>, item: Item, now_ms: u64, out: &mut Vec<u8>) {
        if let Some(reply) = item.device_reply() {
            out.extend_from_slice(reply);
            return;
        }
        let Item::Frame { json, style } = item else { return };
        let id = app.config().device_id;
        let request = match frame::parse_request(&json) {
            Ok(request) => request,
            Err(error) => {
                if let Some(response) = Response::bad_request(&error, &id) {
                    out.extend(self.encoder.encode(response.to_json().as_bytes(), style));
                }
                return;
            }
        };
        if !frame::dst_is_local(&request, &id) {
            return;
        }
        let outcome: Result<Value, RpcError> =
            match service::dispatch(app, &request.method, &request.params, now_ms, now_ms) {
                Reply::Result(value) => Ok(value),
                Reply::Error(e) => Err(e),
                // Wi-Fi is not brought up by this port yet: nothing to pull over.
                Reply::Pull(_) => {
                    Err(RpcError::new(-1, "this board has no network yet: nothing to pull over"))
                }
            };
        let response = match outcome {
            Ok(value) => Response::ok(&request, &id, value),
            Err(e) if e.code == 404 => Response::no_handler(&request, &id),
            Err(e) => Response::error(&request, &id, e.code as i64, e.message),
        };
        if let Some(response) = response {
            out.extend(self.encoder.encode(response.to_json().as_bytes(), style));
        }
    }
}
