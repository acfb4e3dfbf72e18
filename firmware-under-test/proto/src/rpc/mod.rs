//! Mongoose OS RPC over a byte stream, in two pure layers: bytes in, bytes out, no I/O, no clock,
//! no threads, so that the virtual board, the runner's client (`hil call`, `hil ota`) and the
//! firmware on a real board run the same code.
//!
//! - [`uart`]: the serial framing. A [`uart::Decoder`] turns a byte stream fed in chunks of any
//!   size into [`uart::Item`]s (frames with how they were framed, EOT, empty lines, junk, and
//!   what was dropped and why); [`uart::encode`] and [`uart::Encoder`] frame outgoing JSON.
//! - [`frame`]: the JSON inside a frame. [`frame::parse_request`] and [`frame::Response`] on the
//!   device, [`frame::Request::new`] and [`frame::parse_response`] on the client.
//!
//! A device's receive path, in order: `Decoder::feed` → for each `Item::Frame`, `parse_request`
//! → drop it unless `dst_is_local` → dispatch → `Response::ok`/`error` (nothing for a
//! notification) → `to_json` → `Encoder::encode` with the request's style.

pub mod frame;
pub mod uart;
