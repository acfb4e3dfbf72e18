//! The HTTP request parser and the multipart upload form of `POST /update`.
//!
//! Checks: no panic; events come in order (one head first, non-empty body pieces, one end last)
//! and `body_bytes` counts the body; the head, body and outcome do not depend on the chunking
//! (the payload in one piece gives the same); a body whose `Content-Type` makes an `UploadForm`
//! goes through it in the same chunks, with bundle events in order and at most one bundle.
//!
//! Flags (see `ota_fuzz`): bit 0 limits the body to 1 KiB (`with_body_max_bytes`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_proto::http::HttpError;
use ota_proto::http::multipart::{UploadEvent, UploadForm};
use ota_proto::http::request::{RequestEvent, RequestHead, RequestParser};

#[derive(Debug, PartialEq)]
struct Parsed {
    head: Option<RequestHead>,
    body: Vec<u8>,
    ended: bool,
    error: Option<HttpError>,
}

/// The upload form reading the body, and where its bundle events have got to.
struct Upload {
    form: UploadForm,
    in_bundle: bool,
    bundles: u32,
    failed: bool,
}

impl Upload {
    fn feed(&mut self, piece: &[u8]) {
        if self.failed {
            return;
        }
        let Upload { form, in_bundle, bundles, .. } = self;
        let result = form.feed(piece, |event| -> Result<(), HttpError> {
            match event {
                UploadEvent::BundleStart { .. } => {
                    assert!(!*in_bundle, "a bundle started inside a bundle");
                    *in_bundle = true;
                    *bundles += 1;
                    assert_eq!(*bundles, 1, "a second bundle");
                }
                UploadEvent::BundleData(bytes) => {
                    assert!(*in_bundle && !bytes.is_empty(), "bundle data out of place")
                }
                UploadEvent::BundleEnd => {
                    assert!(*in_bundle, "a bundle ended that never started");
                    *in_bundle = false;
                }
                UploadEvent::End => assert!(!*in_bundle, "the form ended inside the bundle"),
            }
            Ok(())
        });
        if let Err(error) = result {
            let _ = error.to_string();
            self.failed = true;
        }
    }
}

fn parse<'a>(body_max_bytes: Option<u64>, pieces: impl Iterator<Item = &'a [u8]>) -> Parsed {
    let mut parser = match body_max_bytes {
        Some(max) => RequestParser::with_body_max_bytes(max),
        None => RequestParser::new(),
    };
    let mut parsed = Parsed { head: None, body: Vec::new(), ended: false, error: None };
    let mut upload: Option<Upload> = None;
    'pieces: for piece in pieces {
        for event in parser.feed(piece) {
            assert!(!parsed.ended, "an event after End");
            match event {
                Ok(RequestEvent::Head(head)) => {
                    if let Some(Ok(form)) = head.header("content-type").map(UploadForm::new) {
                        upload = Some(Upload { form, in_bundle: false, bundles: 0, failed: false });
                    }
                    let _ = (head.expects_continue(), head.query_param("commit_timeout"));
                    assert!(parsed.head.replace(head).is_none(), "a second Head");
                }
                Ok(RequestEvent::Body(bytes)) => {
                    assert!(
                        parsed.head.is_some() && !bytes.is_empty(),
                        "a body piece before the head, or empty"
                    );
                    parsed.body.extend_from_slice(bytes);
                    if let Some(upload) = &mut upload {
                        upload.feed(bytes);
                    }
                }
                Ok(RequestEvent::End) => parsed.ended = true,
                Err(error) => {
                    let _ = error.to_string();
                    parsed.error = Some(error);
                    break 'pieces;
                }
            }
        }
        if parsed.ended {
            break;
        }
    }
    if parsed.error.is_none() {
        if let Err(error) = parser.finish() {
            parsed.error = Some(error);
        } else {
            assert!(parsed.ended && parser.is_done(), "finish() accepted a request without End");
        }
    }
    assert_eq!(parser.body_bytes(), parsed.body.len() as u64, "body_bytes miscounts the body");
    if let Some(upload) = &upload {
        if parsed.ended && !upload.failed {
            let _ = upload.form.finish();
        }
        let _ = (upload.form.has_bundle(), upload.form.fields(), upload.form.field("commit_timeout"));
    }
    parsed
}

fuzz_target!(|data: &[u8]| {
    let Some((flags, lengths, payload)) = ota_fuzz::split(data) else { return };
    let body_max_bytes = (flags & 1 != 0).then_some(1024);
    let chunked = parse(body_max_bytes, ota_fuzz::chunks(lengths, payload));
    let whole = parse(body_max_bytes, std::iter::once(payload));
    assert_eq!(chunked, whole, "the request depends on the chunking");
});
