//! The RPC frame parser and the UART decoder.
//!
//! Checks: no panic; the payload as one frame goes through `parse_request` and
//! `parse_response`, and a refused frame gets its error reply; fed to a `Decoder` in the chunks
//! the input chooses, the decoder never holds more than
//! `max_frame_bytes + META_MAX_BYTES + HELD_QUOTES_MAX` bytes (its documented bound), gives the
//! items it gives for the payload in one piece (its documented promise), and every frame it finds
//! goes through `parse_request`.
//!
//! Flags (see `ota_fuzz`): bits 0–1 pick `max_frame_bytes` (2, 64, 1024 or the default 8192).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_proto::rpc::frame::{self, Response};
use ota_proto::rpc::uart::{DEFAULT_MAX_FRAME_BYTES, Decoder, HELD_QUOTES_MAX, Item, META_MAX_BYTES};

const MAX_FRAME_BYTES: [usize; 4] = [2, 64, 1024, DEFAULT_MAX_FRAME_BYTES];

fn parse(json: &[u8]) {
    match frame::parse_request(json) {
        Ok(request) => {
            let _ = request.to_json();
            let _ = frame::dst_is_local(&request, "esp32_fuzz");
            if let Some(reply) = Response::no_handler(&request, "esp32_fuzz") {
                let _ = reply.to_json();
            }
        }
        Err(error) => {
            let _ = error.to_string();
            let _ = frame::not_a_frame_json(&error, "esp32_fuzz");
            if let Some(reply) = Response::bad_request(&error, "esp32_fuzz") {
                let _ = reply.to_json();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((flags, lengths, payload)) = ota_fuzz::split(data) else { return };
    parse(payload);
    if let Ok(response) = frame::parse_response(payload) {
        let _ = response.to_json();
    }

    let max_frame_bytes = MAX_FRAME_BYTES[usize::from(flags & 3)];
    let whole = Decoder::new(max_frame_bytes).decode(payload);
    let mut decoder = Decoder::new(max_frame_bytes);
    let mut items = Vec::new();
    for chunk in ota_fuzz::chunks(lengths, payload) {
        decoder.feed(chunk, |item| items.push(item));
        assert!(
            decoder.buffered_bytes() <= max_frame_bytes + META_MAX_BYTES + HELD_QUOTES_MAX,
            "the decoder holds {} bytes, over {max_frame_bytes} + {META_MAX_BYTES} + {HELD_QUOTES_MAX}",
            decoder.buffered_bytes()
        );
    }
    assert_eq!(items, whole, "the items depend on the chunking");
    for item in &items {
        if let Item::Frame { json, .. } = item {
            parse(json);
        }
    }
});
