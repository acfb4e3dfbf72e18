//! The Mongoose OS RPC frame: one JSON object per request, notification or response.
//!
//! Requests, as `mg_rpc_parse_frame` (rpc-common) and `mos` (`common/mgrpc/frame/frame.go`) write
//! and read them:
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `id` | number or string | absent: a notification, never answered; echoed in the same type |
//! | `src` | string | the requester; becomes the reply's `dst` |
//! | `dst` | string | empty or absent: whoever is on the other end; else must be the device's id |
//! | `tag` | any | copied back verbatim |
//! | `key` | string | pre-shared key, kept for the caller |
//! | `method` | string | required, non-empty |
//! | `params` | any | the arguments; `args` is the deprecated alias (`params` wins when both are given) |
//! | `v`, `jsonrpc`, `deadline`, `timeout`, `trace`, `nr`, `auth` | any | accepted and ignored |
//!
//! Responses are `{id, src, dst, tag?, result}` or `{id, src, dst, tag?, error: {code, message?}}`
//! in that key order, `src` being the device's id and `dst` the requester's `src` (left out when
//! the request had none). Every JSON text this module writes is compact and ASCII-only (non-ASCII
//! characters become `\uXXXX` escapes), because the UART side clears its buffer on a byte ≥ 0x80.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use core::fmt::{self, Write as _};

use serde::Serialize;
use serde_json::{Map, Number, Value};

/// The `src` the runner's client puts in its requests, as `mos` puts `"mos"`.
pub const CLIENT_SRC: &str = "hil";

/// Error code and message for a frame that is an object with an id but no method.
pub const BAD_REQUEST_CODE: i64 = 400;
/// See [`BAD_REQUEST_CODE`].
pub const BAD_REQUEST_MESSAGE: &str = "bad request";
/// Error code for a method nobody registered; the message is `"No handler for <method>"`.
pub const NO_HANDLER_CODE: i64 = 404;
/// Error code and message (rpc-common's) when a request queue is full.
pub const QUEUE_FULL_CODE: i64 = 429;
/// See [`QUEUE_FULL_CODE`].
pub const QUEUE_FULL_MESSAGE: &str = "Request queue overflow";

/// A request id: a JSON number or string, echoed back in the same type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Id {
    Num(Number),
    Str(String),
}

impl From<u64> for Id {
    fn from(n: u64) -> Id {
        Id::Num(n.into())
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Id {
        Id::Num(n.into())
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Id {
        Id::Str(s.to_owned())
    }
}

impl From<String> for Id {
    fn from(s: String) -> Id {
        Id::Str(s)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Num(n) => write!(f, "{n}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A request or notification (no `id`), as received or as the runner's client sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Id>,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub tag: Option<Value>,
    pub key: Option<String>,
    pub method: String,
    /// `Value::Null` when the frame had neither `params` nor `args`.
    pub params: Value,
}

impl Request {
    /// A request from the runner's client: `src` is [`CLIENT_SRC`], no `dst`, `tag` or `key`.
    pub fn new(id: impl Into<Id>, method: impl Into<String>, params: Value) -> Request {
        Request {
            id: Some(id.into()),
            src: Some(CLIENT_SRC.to_owned()),
            dst: None,
            tag: None,
            key: None,
            method: method.into(),
            params,
        }
    }

    /// A frame without an id expects no reply.
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }

    /// `{"id":…,"src":…,"dst":…,"tag":…,"key":…,"method":…,"params":…}`, absent fields and null
    /// params left out (as `mos` leaves them out), compact and ASCII-only.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a Id>,
            #[serde(skip_serializing_if = "Option::is_none")]
            src: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            dst: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tag: Option<&'a Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            key: Option<&'a str>,
            method: &'a str,
            #[serde(skip_serializing_if = "Value::is_null")]
            params: &'a Value,
        }
        to_ascii_json(&Wire {
            id: self.id.as_ref(),
            src: self.src.as_deref(),
            dst: self.dst.as_deref(),
            tag: self.tag.as_ref(),
            key: self.key.as_deref(),
            method: &self.method,
            params: &self.params,
        })
    }
}

/// Whether the device should handle `req`: a `dst` that is neither empty nor `device_id` means
/// the frame is for someone else, and Mongoose OS drops it ("Wrong dst") without a reply.
pub fn dst_is_local(req: &Request, device_id: &str) -> bool {
    dst_is_local_str(req.dst.as_deref(), device_id)
}

fn dst_is_local_str(dst: Option<&str>, device_id: &str) -> bool {
    match dst {
        None | Some("") => true,
        Some(dst) => dst == device_id,
    }
}

/// The `error` object of a response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a response carries: `result` (any JSON, `null` included) or `error`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Result(Value),
    Error(RpcError),
}

/// A response frame. Only requests with an id get one, so `id` is not optional.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response {
    pub id: Id,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<Value>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Response {
    /// The reply carrying `result`, or `None` when `req` is a notification.
    pub fn ok(req: &Request, device_id: &str, result: Value) -> Option<Response> {
        reply(req.id.as_ref(), req.src.as_deref(), req.tag.as_ref(), device_id, Outcome::Result(result))
    }

    /// The reply carrying `{code, message}`, or `None` when `req` is a notification.
    pub fn error(req: &Request, device_id: &str, code: i64, message: impl Into<String>) -> Option<Response> {
        let error = RpcError { code, message: Some(message.into()) };
        reply(req.id.as_ref(), req.src.as_deref(), req.tag.as_ref(), device_id, Outcome::Error(error))
    }

    /// 404 `"No handler for <method>"`, as rpc-common answers an unknown method.
    pub fn no_handler(req: &Request, device_id: &str) -> Option<Response> {
        Response::error(req, device_id, NO_HANDLER_CODE, format!("No handler for {}", req.method))
    }

    /// 429 `"Request queue overflow"`, for a request the device has no room to queue.
    pub fn queue_full(req: &Request, device_id: &str) -> Option<Response> {
        Response::error(req, device_id, QUEUE_FULL_CODE, QUEUE_FULL_MESSAGE)
    }

    /// 400 `"bad request"` for a frame that [`parse_request`] refused with
    /// [`FrameError::NoMethod`], when that frame had an id and a local `dst`. Every other error
    /// leaves nothing to reply to (no id, or no way to tell where the reply goes).
    pub fn bad_request(error: &FrameError, device_id: &str) -> Option<Response> {
        let FrameError::NoMethod { id, src, dst, tag } = error else { return None };
        if !dst_is_local_str(dst.as_deref(), device_id) {
            return None;
        }
        let error = RpcError { code: BAD_REQUEST_CODE, message: Some(BAD_REQUEST_MESSAGE.to_owned()) };
        reply(id.as_ref(), src.as_deref(), tag.as_ref(), device_id, Outcome::Error(error))
    }

    /// `{"id":…,"src":…,"dst":…,"tag":…,"result":…}` (or `"error":{…}`), compact and ASCII-only.
    pub fn to_json(&self) -> String {
        to_ascii_json(self)
    }
}

/// The error frame for bytes that are not a request at all, for a transport that answers every
/// request (HTTP's `POST /rpc`): `{"src":…,"error":{"code":400,"message":"bad request: <why>"}}`,
/// compact and ASCII-only. It has no `id`, as there was none to echo; the serial line answers
/// such bytes with nothing, as rpc-uart does.
pub fn not_a_frame_json(error: &FrameError, device_id: &str) -> String {
    #[derive(Serialize)]
    struct Wire<'a> {
        src: &'a str,
        error: RpcError,
    }
    let message = format!("{BAD_REQUEST_MESSAGE}: {error}");
    to_ascii_json(&Wire {
        src: device_id,
        error: RpcError { code: BAD_REQUEST_CODE, message: Some(message) },
    })
}

fn reply(
    id: Option<&Id>,
    requester: Option<&str>,
    tag: Option<&Value>,
    device_id: &str,
    outcome: Outcome,
) -> Option<Response> {
    Some(Response {
        id: id?.clone(),
        src: Some(device_id.to_owned()),
        dst: requester.filter(|s| !s.is_empty()).map(str::to_owned),
        tag: tag.cloned(),
        outcome,
    })
}

/// What was wrong with a frame. [`Response::bad_request`] says which of these get a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameError {
    /// The bytes are not one JSON value.
    NotJson { detail: String },
    /// Valid JSON, but not an object.
    NotObject { found: &'static str },
    /// `id` is present but neither a number nor a string (`null` included, as in rpc-common).
    BadId { found: &'static str },
    /// `src`, `dst` or `key` is present and not a string.
    BadField { field: &'static str, found: &'static str },
    /// A request without a non-empty string `method`; answered 400 when it has an id.
    NoMethod { id: Option<Id>, src: Option<String>, dst: Option<String>, tag: Option<Value> },
    /// [`parse_request`] met a response (`result` or `error`, no `method`); never answered, so
    /// that two peers cannot bounce errors at each other.
    NotARequest,
    /// [`parse_response`] met a frame without an id.
    NoId,
    /// [`parse_response`] met a frame with neither `result` nor `error`.
    NoOutcome,
    /// [`parse_response`] met an `error` that is not `{code: integer, message?: string}`.
    BadError { detail: &'static str },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NotJson { detail } => write!(f, "not JSON ({detail})"),
            FrameError::NotObject { found } => write!(f, "not a JSON object (found {found})"),
            FrameError::BadId { found } => write!(f, "`id` must be a number or a string (found {found})"),
            FrameError::BadField { field, found } => write!(f, "`{field}` must be a string (found {found})"),
            FrameError::NoMethod { id: Some(id), .. } => {
                write!(f, "request {id} has no `method` (a non-empty string); answered 400 \"bad request\"")
            }
            FrameError::NoMethod { id: None, .. } => {
                write!(f, "notification has no `method` (a non-empty string); not answered")
            }
            FrameError::NotARequest => {
                write!(f, "a response (`result` or `error`, no `method`) where a request was expected")
            }
            FrameError::NoId => write!(f, "response has no `id`"),
            FrameError::NoOutcome => write!(f, "response has neither `result` nor `error`"),
            FrameError::BadError { detail } => write!(f, "response `error` {detail}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// Reads one request or notification frame (the JSON bytes only, framing removed).
pub fn parse_request(bytes: &[u8]) -> Result<Request, FrameError> {
    let mut object = parse_object(bytes)?;
    let id = take_id(&mut object)?;
    let src = take_string(&mut object, "src")?;
    let dst = take_string(&mut object, "dst")?;
    let key = take_string(&mut object, "key")?;
    let tag = take_present(&mut object, "tag");
    let method = match object.remove("method") {
        Some(Value::String(method)) if !method.is_empty() => method,
        _ if object.contains_key("result") || object.contains_key("error") => {
            return Err(FrameError::NotARequest);
        }
        _ => return Err(FrameError::NoMethod { id, src, dst, tag }),
    };
    // `params` wins over the deprecated `args` whichever comes first in the text.
    let params = take_present(&mut object, "params").or_else(|| take_present(&mut object, "args"));
    Ok(Request { id, src, dst, tag, key, method, params: params.unwrap_or(Value::Null) })
}

/// Reads one response frame, on the client side.
pub fn parse_response(bytes: &[u8]) -> Result<Response, FrameError> {
    let mut object = parse_object(bytes)?;
    let id = take_id(&mut object)?.ok_or(FrameError::NoId)?;
    let src = take_string(&mut object, "src")?;
    let dst = take_string(&mut object, "dst")?;
    let tag = take_present(&mut object, "tag");
    // `result: null` is a result (OTA.Commit answers it), so look at the key, not the value.
    let outcome = match (object.remove("result"), object.remove("error")) {
        (_, Some(error)) if !error.is_null() => Outcome::Error(read_error(error)?),
        (Some(result), _) => Outcome::Result(result),
        (None, _) => return Err(FrameError::NoOutcome),
    };
    Ok(Response { id, src, dst, tag, outcome })
}

fn read_error(error: Value) -> Result<RpcError, FrameError> {
    let Value::Object(mut error) = error else {
        return Err(FrameError::BadError { detail: "must be an object" });
    };
    let code = match error.remove("code") {
        Some(Value::Number(code)) => code.as_i64(),
        _ => None,
    };
    let code = code.ok_or(FrameError::BadError { detail: "`code` must be an integer" })?;
    let message = match error.remove("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(message)) => Some(message),
        Some(_) => return Err(FrameError::BadError { detail: "`message` must be a string" }),
    };
    Ok(RpcError { code, message })
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, FrameError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(FrameError::NotObject { found: kind(&other) }),
        Err(error) => Err(FrameError::NotJson { detail: error.to_string() }),
    }
}

fn take_id(object: &mut Map<String, Value>) -> Result<Option<Id>, FrameError> {
    match object.remove("id") {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(Id::Num(n))),
        Some(Value::String(s)) => Ok(Some(Id::Str(s))),
        Some(other) => Err(FrameError::BadId { found: kind(&other) }),
    }
}

/// An optional string field; `null` counts as absent.
fn take_string(object: &mut Map<String, Value>, field: &'static str) -> Result<Option<String>, FrameError> {
    match object.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(FrameError::BadField { field, found: kind(&other) }),
    }
}

/// An optional field of any type; `null` counts as absent.
fn take_present(object: &mut Map<String, Value>, field: &str) -> Option<Value> {
    object.remove(field).filter(|v| !v.is_null())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compact JSON with every non-ASCII character escaped as `\uXXXX` (UTF-16, so surrogate pairs
/// above U+FFFF), which stays valid JSON with the same value. serde_json writes non-ASCII
/// characters only inside strings and never escapes them, so escaping them in its output is the
/// same as escaping them while it writes (its custom formatters need `std::io`).
fn to_ascii_json<T: Serialize + ?Sized>(value: &T) -> String {
    let text = serde_json::to_string(value).expect("in-memory frames always serialise: keys are strings");
    if text.is_ascii() {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{unit:04x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ascii_json_escapes_non_ascii_and_keeps_the_value() {
        let value = json!({"k": "é → 🦀", "n": 1});
        let text = to_ascii_json(&value);
        assert!(text.is_ascii(), "{text}");
        assert_eq!(text, r#"{"k":"\u00e9 \u2192 \ud83e\udd80","n":1}"#);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn params_win_over_args_in_either_order() {
        for text in [r#"{"method":"M","args":1,"params":2}"#, r#"{"method":"M","params":2,"args":1}"#] {
            assert_eq!(parse_request(text.as_bytes()).unwrap().params, json!(2), "{text}");
        }
    }

    #[test]
    fn result_null_is_a_result() {
        let response = parse_response(br#"{"id":1,"src":"d","result":null}"#).unwrap();
        assert_eq!(response.outcome, Outcome::Result(Value::Null));
        assert_eq!(response.to_json(), r#"{"id":1,"src":"d","result":null}"#);
    }

    #[test]
    fn an_empty_requester_src_gives_no_dst() {
        let req = parse_request(br#"{"id":1,"src":"","method":"M"}"#).unwrap();
        let response = Response::ok(&req, "dev", Value::Null).unwrap();
        assert_eq!(response.dst, None);
    }
}
