//! HTTP: requests, multipart bodies, responses, and the pull client's request and response.
//!
//! The requests under `data/curl/` are the bytes curl sent to a loopback listener; the README
//! there gives each command. The pull client over a socket is tested in the firmware crate
//! (`firmware-under-test/tests/pull.rs`); here its two pure halves are, byte by byte.

use ota_proto::http::HttpError;
use ota_proto::http::client::{
    self, CODE_FAILED, DeviceIdentity, HttpUrl, Progress, PullError, PullOutcome, Reply, ResponseParser,
};
use ota_proto::http::multipart::{MultipartEvent, MultipartParser, UploadEvent, UploadForm};
use ota_proto::http::request::{RequestEvent, RequestHead, RequestParser};
use ota_proto::http::response::{CONTINUE_100, Response};
use proptest::prelude::*;

const CURL_REQUESTS: [(&str, &[u8]); 9] = [
    ("get_update_commit", include_bytes!("data/curl/get_update_commit.http")),
    ("get_update_query", include_bytes!("data/curl/get_update_query.http")),
    ("post_update_file_first", include_bytes!("data/curl/post_update_file_first.http")),
    ("post_update_field_first", include_bytes!("data/curl/post_update_field_first.http")),
    ("post_update_stdin_no_part_type", include_bytes!("data/curl/post_update_stdin_no_part_type.http")),
    ("post_update_quote_in_filename", include_bytes!("data/curl/post_update_quote_in_filename.http")),
    ("post_rpc_json", include_bytes!("data/curl/post_rpc_json.http")),
    ("post_rpc_chunked", include_bytes!("data/curl/post_rpc_chunked.http")),
    ("put_update_chunked_expect", include_bytes!("data/curl/put_update_chunked_expect.http")),
];

/// The `fw.zip` curl uploaded in the small captures.
const FW_ZIP: &[u8] = b"PK\x03\x04fake-bundle\r\n--not-a-boundary\r\n\x00\xff";

fn curl(name: &str) -> &'static [u8] {
    CURL_REQUESTS.iter().find(|(n, _)| *n == name).expect("a captured request").1
}

fn split_at_cuts<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        pieces.push(&bytes[from..cut]);
        from = cut;
    }
    pieces
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Feeds a request in `pieces` and returns its head and joined body, checking the order of
/// events on the way: one head first, non-empty body pieces, one end last.
fn parse_request(pieces: &[&[u8]]) -> Result<(RequestHead, Vec<u8>), HttpError> {
    let mut parser = RequestParser::new();
    let mut head = None;
    let mut body = Vec::new();
    let mut ended = false;
    for piece in pieces {
        for event in parser.feed(piece) {
            assert!(!ended, "an event after End");
            match event? {
                RequestEvent::Head(h) => assert!(head.replace(h).is_none(), "a second Head"),
                RequestEvent::Body(bytes) => {
                    assert!(head.is_some() && !bytes.is_empty(), "a body piece before the head, or empty");
                    body.extend_from_slice(bytes);
                }
                RequestEvent::End => ended = true,
            }
        }
    }
    parser.finish()?;
    assert!(ended && parser.is_done(), "finish() accepted a request without End");
    assert_eq!(parser.body_bytes(), body.len() as u64);
    Ok((head.expect("a head before End"), body))
}

fn dump_request(head: &RequestHead, body: &[u8]) -> String {
    let mut out = format!("{} {}\n", head.method, head.path);
    for (name, value) in &head.query {
        out.push_str(&format!("query {name} = {value:?}\n"));
    }
    for (name, value) in &head.headers {
        out.push_str(&format!("header {name}: {value}\n"));
    }
    out.push_str(&format!("expects 100-continue: {}\n", head.expects_continue()));
    out.push_str(&format!("body {} bytes: {}\n", body.len(), body.escape_ascii()));
    out
}

#[test]
fn curl_requests_parse_into_their_head_and_body() {
    for (name, bytes) in CURL_REQUESTS {
        let (head, body) = parse_request(&[bytes]).unwrap_or_else(|e| panic!("{name}: {e}"));
        insta::assert_snapshot!(format!("curl_{name}"), dump_request(&head, &body));
    }
}

#[test]
fn query_params_are_decoded_and_headers_are_found_in_any_case() {
    let (head, _) = parse_request(&[curl("get_update_query")]).unwrap();
    assert_eq!(head.query_param("url"), Some("http://example.com/fw.zip"));
    assert_eq!(head.query_param("commit_timeout"), Some("300"));
    assert_eq!(head.query_param("note"), Some("a b"));
    assert_eq!(head.query_param("missing"), None);
    assert_eq!(head.header("user-agent"), Some("curl/7.88.1"));
    assert_eq!(head.header("USER-AGENT"), Some("curl/7.88.1"));
}

#[test]
fn every_two_piece_split_of_each_curl_request_gives_the_same_events() {
    for (name, bytes) in CURL_REQUESTS {
        let whole = parse_request(&[bytes]).unwrap();
        for cut in 0..=bytes.len() {
            assert_eq!(parse_request(&split_at_cuts(bytes, &[cut])).unwrap(), whole, "{name} cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_request(&bytewise).unwrap(), whole, "{name} byte by byte");
    }
}

proptest! {
    #[test]
    fn splitting_a_request_anywhere_gives_the_same_events(
        which in 0..CURL_REQUESTS.len(),
        cuts in prop::collection::vec(0..600_usize, 0..12),
    ) {
        // However the socket cuts a request into pieces, the parser finds the same head and body.
        let (_, bytes) = CURL_REQUESTS[which];
        let whole = parse_request(&[bytes]).unwrap();
        prop_assert_eq!(parse_request(&split_at_cuts(bytes, &cuts)).unwrap(), whole);
    }
}

#[test]
fn bytes_after_the_end_of_a_request_are_left_unused() {
    let mut input = curl("post_rpc_json").to_vec();
    input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    let mut parser = RequestParser::new();
    let mut events = parser.feed(&input);
    assert!(matches!(events.next(), Some(Ok(RequestEvent::Head(_)))));
    assert_eq!(events.next(), Some(Ok(RequestEvent::Body(br#"{"url":"http://x/fw.zip"}"#))));
    assert_eq!(events.next(), Some(Ok(RequestEvent::End)));
    assert_eq!(events.next(), None);
    assert_eq!(events.rest(), b"GET /next HTTP/1.1\r\n\r\n");
}

#[test]
fn a_parser_that_failed_keeps_failing_with_the_same_error() {
    let mut parser = RequestParser::new();
    let first: Vec<_> = parser.feed(b"BAD\r\n").collect();
    assert_eq!(first.len(), 1);
    let error = first[0].clone().unwrap_err();
    assert_eq!(parser.feed(b"GET / HTTP/1.1\r\n\r\n").next(), Some(Err(error.clone())));
    assert_eq!(parser.finish(), Err(error));
}

#[test]
fn a_connection_closed_before_any_byte_carried_no_request() {
    let parser = RequestParser::new();
    assert!(!parser.has_started());
    let mut parser = RequestParser::new();
    assert_eq!(parser.feed(b"G").count(), 0);
    assert!(parser.has_started());
}

#[test]
fn limits_hold_at_their_edge() {
    let with_headers = |n: usize| {
        let mut request = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..n {
            request.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        parse_request(&[&request]).map(|(head, _)| head.headers.len())
    };
    assert_eq!(with_headers(64), Ok(64));
    assert_eq!(with_headers(65).unwrap_err().status, 431);

    let with_head_bytes = |n: usize| {
        let fixed = "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
        let request = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(n - fixed));
        parse_request(&[request.as_bytes()]).map(|_| ())
    };
    assert_eq!(with_head_bytes(8192), Ok(()));
    assert_eq!(with_head_bytes(8193).unwrap_err().status, 431);

    let with_body = |parser: &mut RequestParser, request: &[u8]| -> Result<(), HttpError> {
        for event in parser.feed(request) {
            event?;
        }
        parser.finish()
    };
    let sized = |n: usize| format!("POST / HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{}", "b".repeat(n));
    assert_eq!(with_body(&mut RequestParser::with_body_max_bytes(10), sized(10).as_bytes()), Ok(()));
    assert_eq!(
        with_body(&mut RequestParser::with_body_max_bytes(10), sized(11).as_bytes()).unwrap_err().status,
        413
    );
    let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nbbbbbb\r\n4\r\nbbbb\r\n";
    let mut parser = RequestParser::with_body_max_bytes(10);
    assert_eq!(with_body(&mut parser, format!("{chunked}0\r\n\r\n").as_bytes()), Ok(()));
    let mut parser = RequestParser::with_body_max_bytes(10);
    assert_eq!(
        with_body(&mut parser, format!("{chunked}1\r\nb\r\n0\r\n\r\n").as_bytes()).unwrap_err().status,
        413
    );
}

#[test]
fn chunked_bodies_with_extensions_and_trailers_are_read() {
    let request = b"POST /rpc HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n\
                    3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nX-Trailer: t\r\n\r\n";
    let (_, body) = parse_request(&[request]).unwrap();
    assert_eq!(body, b"abcd");
}

/// Each malformed request, fed whole and then ended, with the error the server answers.
#[test]
fn malformed_requests_are_refused_with_a_status_and_a_reason() {
    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(8200));
    let long_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(8200));
    let many_headers = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(65));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("two words in the request line", b"GET /\r\n\r\n".to_vec()),
        ("lowercase version", b"GET / http/1.1\r\n\r\n".to_vec()),
        ("HTTP/2", b"GET / HTTP/2.0\r\n\r\n".to_vec()),
        ("bad method", b"G(T / HTTP/1.1\r\n\r\n".to_vec()),
        ("target not a path", b"GET update HTTP/1.1\r\n\r\n".to_vec()),
        ("bad percent escape", b"GET /update?url=%zz HTTP/1.1\r\n\r\n".to_vec()),
        ("header without a colon", b"GET / HTTP/1.1\r\nHost\r\n\r\n".to_vec()),
        ("folded header", b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n".to_vec()),
        ("space before the colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n".to_vec()),
        ("65 headers", many_headers.into_bytes()),
        ("request line over 8 KiB", long_line.into_bytes()),
        ("head over 8 KiB", long_head.into_bytes()),
        ("Content-Length not a number", b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n".to_vec()),
        (
            "conflicting Content-Length",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
        ),
        (
            "Content-Length and chunked",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        ),
        ("gzip transfer coding", b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec()),
        ("body over 16 MiB", b"POST / HTTP/1.1\r\nContent-Length: 16777217\r\n\r\n".to_vec()),
        ("chunk over 16 MiB", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000001\r\n".to_vec()),
        ("bad chunk size", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec()),
        (
            "chunk without its CRLF",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX".to_vec(),
        ),
        ("cut in the head", b"POST /update HTTP/1.1\r\nContent-Le".to_vec()),
        ("cut in the body", b"POST /update HTTP/1.1\r\nContent-Length: 10\r\n\r\nabcd".to_vec()),
        ("cut in a chunked body", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab".to_vec()),
    ];
    let mut report = String::new();
    for (name, request) in cases {
        let mut parser = RequestParser::new();
        let fed: Result<Vec<_>, _> = parser.feed(&request).collect();
        let error = fed.err().or_else(|| parser.finish().err()).unwrap_or_else(|| panic!("{name}: accepted"));
        report.push_str(&format!("{name}: {error}\n"));
    }
    insta::assert_snapshot!(report);
}

// ---------------------------------------------------------------------------------------------
// Multipart

/// What an upload form gave, with the order of its events checked.
#[derive(Debug, Default, PartialEq, Eq)]
struct Upload {
    field: Option<String>,
    filename: Option<String>,
    bundle: Vec<u8>,
    fields: Vec<(String, String)>,
}

fn upload(content_type: &str, pieces: &[&[u8]]) -> Result<Upload, HttpError> {
    let mut form = UploadForm::new(content_type)?;
    let mut upload = Upload::default();
    let (mut in_bundle, mut ended) = (false, false);
    for piece in pieces {
        form.feed(piece, |event| -> Result<(), HttpError> {
            assert!(!ended, "an event after End");
            match event {
                UploadEvent::BundleStart { field, filename } => {
                    assert!(upload.field.is_none(), "a second bundle");
                    (upload.field, upload.filename, in_bundle) = (Some(field), Some(filename), true);
                }
                UploadEvent::BundleData(bytes) => {
                    assert!(in_bundle && !bytes.is_empty(), "bundle data outside the bundle, or empty");
                    upload.bundle.extend_from_slice(bytes);
                }
                UploadEvent::BundleEnd => in_bundle = false,
                UploadEvent::End => ended = true,
            }
            Ok(())
        })?;
    }
    form.finish()?;
    assert!(ended && !in_bundle);
    upload.fields = form.fields().to_vec();
    Ok(upload)
}

/// The multipart body of a captured request and its Content-Type.
fn curl_upload(name: &str) -> (String, Vec<u8>) {
    let (head, body) = parse_request(&[curl(name)]).unwrap();
    (head.header("Content-Type").unwrap().to_string(), body)
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

#[test]
fn curl_uploads_give_the_bundle_and_the_commit_timeout_before_or_after_it() {
    let cases = [
        ("post_update_file_first", "file", "fw.zip", fields(&[("commit_timeout", "300")])),
        ("post_update_field_first", "filedata", "fw.zip", fields(&[("commit_timeout", "300")])),
        ("post_update_stdin_no_part_type", "file", "-", fields(&[("commit_timeout", "300")])),
        ("post_update_quote_in_filename", "file", "a b%22c.zip", fields(&[])),
    ];
    for (name, field, filename, expected_fields) in cases {
        let (content_type, body) = curl_upload(name);
        let expected = Upload {
            field: Some(field.into()),
            filename: Some(filename.into()),
            bundle: FW_ZIP.to_vec(),
            fields: expected_fields,
        };
        assert_eq!(upload(&content_type, &[&body]).unwrap(), expected, "{name}");
        for cut in 0..=body.len() {
            let pieces = split_at_cuts(&body, &[cut]);
            assert_eq!(upload(&content_type, &pieces).unwrap(), expected, "{name} cut at {cut}");
        }
    }
}

#[test]
fn part_heads_carry_name_filename_and_content_type() {
    let (content_type, body) = curl_upload("post_update_file_first");
    let mut parser = MultipartParser::from_content_type(&content_type).unwrap();
    let mut log = Vec::new();
    parser
        .feed(&body, |event| -> Result<(), HttpError> {
            log.push(match event {
                MultipartEvent::PartStart(head) => format!("{head:?}"),
                MultipartEvent::PartData(bytes) => format!("data {}", bytes.escape_ascii()),
                MultipartEvent::PartEnd => "end of part".to_string(),
                MultipartEvent::End => "end".to_string(),
            });
            Ok(())
        })
        .unwrap();
    parser.finish().unwrap();
    insta::assert_snapshot!(log.join("\n"));
}

/// The generated file of the 1,100,000-byte capture.
fn det_zip() -> Vec<u8> {
    (0..1_100_000_usize).map(|i| (((i * 131) ^ (i >> 9)) & 0xff) as u8).collect()
}

#[test]
fn a_curl_upload_of_1100000_bytes_streams_through_with_bounded_lag() {
    // curl's real head and tail around the generated file, fed in TCP-segment-sized pieces.
    let file = det_zip();
    let head = include_bytes!("data/curl/post_update_1100000_head.http");
    let tail = include_bytes!("data/curl/post_update_1100000_tail.http");
    let request = [&head[..], &file, tail].concat();
    let body_start = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let file_start = head.len() - body_start;

    let mut parser = RequestParser::new();
    let mut form: Option<UploadForm> = None;
    let (mut fed, mut received, mut lag_max) = (0, Vec::new(), 0);
    for piece in request.chunks(1460) {
        for event in parser.feed(piece) {
            match event.unwrap() {
                RequestEvent::Head(head) => {
                    assert!(head.expects_continue());
                    assert_eq!(
                        head.header("Content-Length"),
                        Some((request.len() - body_start).to_string().as_str())
                    );
                    form = Some(UploadForm::new(head.header("Content-Type").unwrap()).unwrap());
                }
                RequestEvent::Body(bytes) => {
                    let form = form.as_mut().unwrap();
                    form.feed(bytes, |event| -> Result<(), HttpError> {
                        if let UploadEvent::BundleData(data) = event {
                            received.extend_from_slice(data);
                        }
                        Ok(())
                    })
                    .unwrap();
                    fed += bytes.len();
                    if fed > file_start && received.len() < file.len() {
                        lag_max = lag_max.max(fed - file_start - received.len());
                    }
                }
                RequestEvent::End => {}
            }
        }
    }
    parser.finish().unwrap();
    let form = form.unwrap();
    form.finish().unwrap();
    assert!(received == file, "the bundle arrived changed");
    assert_eq!(form.field("commit_timeout"), Some("300"));
    // Inside the file, at most a delimiter's length (CRLF + `--` + 40-byte boundary) is held back.
    assert!(lag_max < 44, "{lag_max} bytes of the file were held back");
}

/// Builds a body the way curl does, with the file before or after the field.
fn form_body(boundary: &str, file: &[u8], file_first: bool) -> Vec<u8> {
    let file_part = [
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.zip\"\r\n")
            .as_bytes(),
        b"Content-Type: application/octet-stream\r\n\r\n",
        file,
        b"\r\n",
    ]
    .concat();
    let field_part =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"commit_timeout\"\r\n\r\n300\r\n")
            .into_bytes();
    let parts = if file_first { [file_part, field_part] } else { [field_part, file_part] };
    [parts.concat(), format!("--{boundary}--\r\n").into_bytes()].concat()
}

/// File contents rich in near-delimiters: CRs, CRLF-dashes and prefixes of the real delimiter.
fn tricky_file(boundary: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let delimiter = format!("\r\n--{boundary}");
    let fragment = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r\n-".to_vec()),
        Just(b"\r\n--".to_vec()),
        (0..delimiter.len()).prop_map(move |n| delimiter.as_bytes()[..n].to_vec()),
        Just(format!("--{boundary}").into_bytes()),
    ];
    // A client picks a boundary that its data does not contain.
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    prop::collection::vec(fragment, 0..12)
        .prop_map(|fragments| fragments.concat())
        .prop_filter("the file holds the delimiter", move |file| {
            !file.windows(delimiter.len()).any(|w| w == delimiter)
        })
}

const BOUNDARY: &str = "------------------------f814f1ddead02a99";

proptest! {
    #[test]
    fn a_body_split_at_any_positions_gives_the_same_bundle_and_fields(
        file in tricky_file(BOUNDARY),
        file_first in any::<bool>(),
        cuts in prop::collection::vec(0..400_usize, 1..6),
    ) {
        // However a body is cut, including inside a delimiter or a near-delimiter in the file,
        // the bundle arrives unchanged and the field is collected.
        let body = form_body(BOUNDARY, &file, file_first);
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        let got = upload(&content_type, &split_at_cuts(&body, &cuts)).unwrap();
        prop_assert_eq!(got.bundle, file);
        prop_assert_eq!(got.fields, fields(&[("commit_timeout", "300")]));
    }
}

#[test]
fn a_delimiter_split_at_every_position_is_found() {
    // A file that ends with a near-delimiter, so the real one follows a held-back prefix.
    let file = format!("abc\r\n--{}X\r\n-", &BOUNDARY[..20]).into_bytes();
    let body = form_body(BOUNDARY, &file, true);
    let content_type = format!("multipart/form-data; boundary=\"{BOUNDARY}\"");
    for first in 0..=body.len() {
        for second in (first..=body.len()).step_by(7) {
            let got = upload(&content_type, &split_at_cuts(&body, &[first, second])).unwrap();
            assert_eq!(got.bundle, file, "cut at {first} and {second}");
        }
    }
}

#[test]
fn a_preamble_transport_padding_and_an_epilogue_are_skipped() {
    let body = b"preamble\r\n--b \t\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\n\
                 data\r\n--b--\r\nepilogue";
    let got = upload("multipart/form-data; boundary=b", &[body]).unwrap();
    assert_eq!(got.bundle, b"data");
}

/// Each malformed upload, fed whole and then ended, with the error the server answers.
#[test]
fn malformed_uploads_are_refused_with_a_reason() {
    let ct = "multipart/form-data; boundary=B";
    let long_boundary = format!("multipart/form-data; boundary={}", "b".repeat(71));
    let part = |name: &str| format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\nv\r\n");
    let file_part = |name: &str| {
        format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\n\r\nv\r\n")
    };
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("not multipart", "application/x-www-form-urlencoded", Vec::new()),
        ("no boundary", "multipart/form-data", Vec::new()),
        ("boundary with a bad character", "multipart/form-data; boundary=a\\b", Vec::new()),
        ("boundary over 70 bytes", &long_boundary, Vec::new()),
        ("unterminated quote in Content-Type", "multipart/form-data; boundary=\"B", Vec::new()),
        ("empty body", ct, Vec::new()),
        ("no boundary in the first 1 KiB", ct, vec![b'x'; 2000]),
        (
            "no closing boundary",
            ct,
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.zip\"\r\n\r\nPK".to_vec(),
        ),
        ("cut in a part head", ct, b"--B\r\nContent-Disposition: form-da".to_vec()),
        ("cut after a boundary", ct, b"--B".to_vec()),
        ("boundary followed by junk", ct, format!("{}--Bxyz", part("a")).into_bytes()),
        ("no Content-Disposition", ct, b"--B\r\nContent-Type: text/plain\r\n\r\nv\r\n--B--".to_vec()),
        ("attachment", ct, b"--B\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nv\r\n--B--".to_vec()),
        ("no name", ct, b"--B\r\nContent-Disposition: form-data; filename=\"f\"\r\n\r\nv\r\n--B--".to_vec()),
        (
            "unterminated quote",
            ct,
            b"--B\r\nContent-Disposition: form-data; name=\"a\r\n\r\nv\r\n--B--".to_vec(),
        ),
        (
            "part header without a colon",
            ct,
            b"--B\r\nContent-Disposition form-data\r\n\r\nv\r\n--B--".to_vec(),
        ),
        ("part head over 1 KiB", ct, format!("--B\r\nX: {}\r\n\r\n", "a".repeat(1100)).into_bytes()),
        ("17 parts", ct, (0..17).map(|i| part(&format!("f{i}"))).collect::<String>().into_bytes()),
        ("second file part", ct, format!("{}{}--B--", file_part("file"), file_part("other")).into_bytes()),
        (
            "field over 50 bytes",
            ct,
            format!("--B\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n{}\r\n--B--", "7".repeat(51))
                .into_bytes(),
        ),
        (
            "field not UTF-8",
            ct,
            b"--B\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n\xff\r\n--B--".to_vec(),
        ),
    ];
    let mut report = String::new();
    for (name, content_type, body) in cases {
        let error = upload(content_type, &[&body]).map(|_| ()).unwrap_err();
        report.push_str(&format!("{name}: {error}\n"));
    }
    insta::assert_snapshot!(report);
}

#[test]
fn a_field_of_exactly_50_bytes_and_an_empty_filename_are_fields() {
    let value = "7".repeat(50);
    let body = format!(
        "--B\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n{value}\r\n\
         --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\"\r\n\r\n\r\n--B--\r\n"
    );
    let got = upload("multipart/form-data; boundary=B", &[body.as_bytes()]).unwrap();
    assert_eq!(got.fields, fields(&[("n", &value), ("file", "")]));
    assert_eq!(got.field, None);
}

// ---------------------------------------------------------------------------------------------
// Responses

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string().replace("\\r\\n", "\\r\\n\n")
}

#[test]
fn responses_as_bytes() {
    let responses = [
        ("update applied", Response::text(200, "Update applied, finalizing\r\n")),
        ("update refused", Response::text(400, "POST updates are disabled.\r\n")),
        ("commit", Response::html(200, "Ok")),
        ("revert refused", Response::html(400, "Error").with_header("X-Reason", "nothing to revert")),
        ("rpc result", Response::json(200, &serde_json::json!({"fw_version": "1.0", "fw_id": "20250101"}))),
        ("options", Response::options()),
        (
            "parser error",
            Response::from_error(&HttpError { status: 431, message: "more than 64 header fields".into() }),
        ),
        ("not found", Response::new(404)),
    ];
    let mut out = String::new();
    for (name, response) in responses {
        out.push_str(&format!("== {name}\n{}\n", show(&response.to_bytes())));
    }
    out.push_str(&format!("== 100 continue\n{}\n", show(CONTINUE_100)));
    insta::assert_snapshot!(out);
}

#[test]
fn every_response_parses_back_with_its_body() {
    // What the device sends must be a well-formed message a client can frame.
    let response = Response::json(500, &serde_json::json!({"code": 500, "message": "boom"}));
    let bytes = response.to_bytes();
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8(bytes[..head_end].to_vec()).unwrap();
    assert!(head.contains(&format!("Content-Length: {}\r\n", response.body.len())));
    assert_eq!(&bytes[head_end..], response.body.as_slice());
}

// ---------------------------------------------------------------------------------------------
// The pull client's request and response, without a socket

fn identity() -> DeviceIdentity {
    DeviceIdentity {
        device_id: Some("esp32_0A1B2C".into()),
        mac: None,
        app: "demo".into(),
        platform: "host".into(),
        fw_version: "1.0.3".into(),
        fw_id: "20250102-120000".into(),
    }
}

fn pull_url() -> HttpUrl {
    HttpUrl::parse("http://127.0.0.1:8000/fw.zip?v=1").unwrap()
}

/// Feeds a response in `pieces` as a socket loop would; returns how it ended, the body pieces the
/// callback got, and whether the parser asked for more bytes after the last piece.
fn read_response(pieces: &[&[u8]]) -> (Result<Progress, PullError>, Vec<Vec<u8>>) {
    let mut parser = ResponseParser::new(&pull_url());
    let mut body = Vec::new();
    let mut on_body = |piece: &[u8]| -> Result<(), String> {
        body.push(piece.to_vec());
        Ok(())
    };
    let mut progress = Ok(Progress::More);
    for piece in pieces {
        progress = parser.feed(piece, &mut on_body);
        if progress != Ok(Progress::More) {
            break;
        }
    }
    if progress == Ok(Progress::More) {
        progress = Err(parser.closed());
    }
    (progress, body)
}

#[test]
fn the_request_head_carries_the_device_headers_then_the_extra_headers() {
    let extra = [("X-Fleet".to_string(), "lab".to_string())];
    let head = client::request_head(&identity(), &extra, &pull_url()).unwrap();
    insta::assert_snapshot!(head.replace("\r\n", "\n"), @r"
    GET /fw.zip?v=1 HTTP/1.1
    Host: 127.0.0.1:8000
    User-Agent: demo/1.0.3 (ota-hil/0.1.0; host)
    X-MGOS-Device-ID: esp32_0A1B2C -
    X-MGOS-FW-Version: host 1.0.3 20250102-120000
    X-Fleet: lab
    Connection: close
    ");
    let with_user = HttpUrl::parse("http://u:p@h/a").unwrap();
    let head = client::request_head(&identity(), &[], &with_user).unwrap();
    assert!(head.contains("\r\nAuthorization: Basic dTpw\r\n"), "{head}");
    let bad = [("X-Bad".to_string(), "a\r\nInjected: 1".to_string())];
    assert_eq!(client::request_head(&identity(), &bad, &pull_url()).unwrap_err().code, -10);
}

#[test]
fn a_response_decides_the_pull_from_its_head() {
    let done = |bytes| Ok(Progress::Reply(Reply::Outcome(PullOutcome::Done { bytes })));
    let (outcome, body) =
        read_response(&[b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfirst", b"-second", b"past"]);
    assert_eq!((outcome, body), (done(12), vec![b"first".to_vec(), b"-second".to_vec()]));
    let (outcome, _) = read_response(&[b"HTTP/1.1 304 Not Modified\r\n\r\n"]);
    assert_eq!(outcome, Ok(Progress::Reply(Reply::Outcome(PullOutcome::NotModified))));
    let (outcome, _) = read_response(&[b"HTTP/1.1 302 Found\r\nLocation: /b\r\n\r\n"]);
    assert_eq!(outcome, Ok(Progress::Reply(Reply::Redirect("/b".into()))));
    let (outcome, _) = read_response(&[b"HTTP/1.1 404 Not Found\r\n\r\n"]);
    assert_eq!(outcome.unwrap_err().code, -404);
    let (outcome, _) = read_response(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]);
    assert_eq!(outcome.unwrap_err().message, "Invalid content-length, perhaps chunked-encoding");
    let (outcome, _) = read_response(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"]);
    assert_eq!(outcome.unwrap_err().message, "Update failed: connection closed after 5 of 10 body bytes");
    let (outcome, _) = read_response(&[b"HTTP/1.1 200 OK\r\nContent-"]);
    let closed = "Update failed: http://127.0.0.1:8000/fw.zip?v=1 closed the connection before the response head was complete";
    assert_eq!(outcome.unwrap_err().message, closed);
}

#[test]
fn reads_never_ask_for_bytes_past_the_body() {
    let mut parser = ResponseParser::new(&pull_url());
    assert_eq!(parser.read_size_max(), client::HEAD_READ_MAX_BYTES);
    let mut sink = |_: &[u8]| -> Result<(), String> { Ok(()) };
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nab", &mut sink).unwrap();
    assert_eq!(parser.read_size_max(), client::READ_PIECE_MAX_BYTES);
    assert_eq!(parser.waiting_for(), "after 2 of 5000 body bytes");
    parser.feed(&[0; 4096], &mut sink).unwrap();
    assert_eq!(parser.read_size_max(), 5000 - 2 - 4096);
    let mut refuse = |_: &[u8]| -> Result<(), String> { Err("Malformed archive (invalid header)".into()) };
    let refused = parser.feed(b"x", &mut refuse).unwrap_err();
    assert_eq!((refused.code, refused.message.as_str()), (CODE_FAILED, "Malformed archive (invalid header)"));
    assert_eq!(parser.read_size_max(), 0, "a parser that gave an error reads no more");
}

proptest! {
    #[test]
    fn a_response_split_anywhere_gives_the_same_body_and_outcome(
        cuts in proptest::collection::vec(0usize..80, 0..6),
    ) {
        // The body is the same bytes whatever the socket's pieces; only its cuts differ.
        let response = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 20\r\n\r\n0123456789abcdefghijEXTRA";
        let (outcome, body) = read_response(&split_at_cuts(response, &cuts));
        prop_assert_eq!(outcome, Ok(Progress::Reply(Reply::Outcome(PullOutcome::Done { bytes: 20 }))));
        prop_assert_eq!(body.concat(), b"0123456789abcdefghij".to_vec());
        prop_assert!(body.iter().all(|piece| !piece.is_empty()));
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers from the wire

/// The error a request parser gives for `request`, fed whole and then ended.
fn request_error(request: &[u8]) -> HttpError {
    let mut parser = RequestParser::new();
    let fed: Result<Vec<_>, _> = parser.feed(request).collect();
    fed.err().or_else(|| parser.finish().err()).expect("the request is refused")
}

/// Regression: a `Content-Length` or chunk size past `u64::MAX` was "not a number" or a "bad
/// chunk-size line" (400), which hid that the number was merely too large; the pull client
/// called such a length "perhaps chunked". Each now names the bound it passed.
#[test]
fn wire_numbers_past_u64_are_refused_naming_the_bound() {
    let mut report = String::new();
    for (name, request) in [
        ("Content-Length u64::MAX", &b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"[..]),
        ("Content-Length u64::MAX + 1", b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n"),
        (
            "Content-Length of 40 digits",
            b"POST / HTTP/1.1\r\nContent-Length: 9999999999999999999999999999999999999999\r\n\r\n",
        ),
        ("chunk size u64::MAX", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"),
        (
            "chunk size u64::MAX + 1",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        ),
        (
            "chunk size u64::MAX after a chunk",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nffffffffffffffff\r\n",
        ),
    ] {
        report.push_str(&format!("{name}: {}\n", request_error(request)));
    }
    for length in ["18446744073709551615", "18446744073709551616"] {
        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nPK");
        let (outcome, body) = read_response(&[response.as_bytes()]);
        let shown = outcome.map_or_else(|e| e.to_string(), |p| format!("{p:?}"));
        report.push_str(&format!(
            "pull, Content-Length {length}: {shown} ({} body bytes)\n",
            body.concat().len()
        ));
    }
    insta::assert_snapshot!(report);
}

proptest! {
    #[test]
    fn any_decimal_content_length_gives_a_body_or_an_error_never_a_panic(digits in "[0-9]{1,45}") {
        // Lengths of any size reach the parsers as text; both bound them without overflowing.
        let request = format!("POST / HTTP/1.1\r\nContent-Length: {digits}\r\n\r\nabc");
        let mut parser = RequestParser::new();
        for event in parser.feed(request.as_bytes()) {
            if event.is_err() {
                break;
            }
        }
        let _ = parser.finish();
        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {digits}\r\n\r\nabc");
        let (outcome, body) = read_response(&[response.as_bytes()]);
        prop_assert!(body.concat().len() <= 3);
        if let Ok(length) = digits.parse::<u64>() {
            prop_assert_eq!(outcome.is_ok(), length <= 3, "{:?}", outcome);
        } else {
            prop_assert!(outcome.unwrap_err().message.contains("larger than the limit of 18446744073709551615 bytes"));
        }
    }

    #[test]
    fn any_hex_chunk_size_gives_a_chunk_or_an_error_never_a_panic(
        first in 1u64..1000,
        digits in "[0-9a-fA-F]{1,40}",
    ) {
        // The second chunk's size adds to the bytes already read; the sum must not overflow.
        let request = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{first:x}\r\n{}\r\n{digits}\r\nabc",
            "b".repeat(first as usize)
        );
        let mut parser = RequestParser::new();
        let mut error = None;
        for event in parser.feed(request.as_bytes()) {
            if let Err(e) = event {
                error = Some(e);
                break;
            }
        }
        let size = u64::from_str_radix(&digits, 16).ok();
        match size {
            // "abc" runs past a chunk of one or two bytes, where CRLF must follow: a 400. (A size
            // of 0 is the last chunk, and "abc" then starts its trailer: no error yet.)
            Some(size @ 1..3) => prop_assert_eq!(error.map(|e| e.status), Some(400), "size {}", size),
            Some(size) if size <= 16 * 1024 * 1024 - first => prop_assert!(error.is_none(), "{:?}", error),
            _ => prop_assert_eq!(error.map(|e| e.status), Some(413)),
        }
    }
}
