//! Pushing a bundle over HTTP, for the boards whose device serves `ota_app::web` (the virtual
//! board on loopback, the QEMU board through QEMU's port forward): the multipart `POST /update`
//! as curl sends it, an upload cut off after a prefix, and the loopback server a pull fetches
//! from.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use super::PushRequest;
use crate::rpc_client::RpcErr;

/// How long an upload or a pull may take, with its finalization.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// `POST http://{addr}/update` with the bundle as the `file` part and `commit_timeout` (and
/// `ignore_same_version`) fields after it, as the seeds' curl line sends them; the status and
/// the body, or what went wrong with every cause.
pub fn post_update(addr: &str, request: &PushRequest<'_>) -> Result<(u16, String), String> {
    let mut form = reqwest::blocking::multipart::Form::new()
        .part("file", reqwest::blocking::multipart::Part::bytes(request.bundle.to_vec()).file_name("fw.zip"))
        .text("commit_timeout", request.commit_timeout_s.to_string());
    if request.ignore_same_version {
        form = form.text("ignore_same_version", "1");
    }
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(TRANSFER_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let answer = http.post(format!("http://{addr}/update")).multipart(form).send().and_then(|r| {
        let status = r.status();
        r.text().map(|body| (status.as_u16(), body))
    });
    answer.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text += &format!(": {cause}");
            source = cause.source();
        }
        text
    })
}

/// How `POST /update` ended: `Ok` with the status message of an update the device took, `Err`
/// with the refusal (any status but 2xx).
pub fn update_answer(status: u16, body: &str) -> Result<String, String> {
    let message = body.trim().to_string();
    if (200..300).contains(&status) { Ok(message) } else { Err(message) }
}

/// `OTA.Update`'s params for a pull of `url` with the push's options.
pub fn pull_params(url: &str, request: &PushRequest<'_>) -> Value {
    let mut params = json!({ "url": url, "commit_timeout": request.commit_timeout_s });
    if request.ignore_same_version {
        params["ignore_same_version"] = json!(true);
    }
    params
}

/// How `OTA.Update` ended: `Ok` with the status message of an update the device took (applied
/// or up to date; old firmware sends success as an error with code 0), `Err` with the refusal.
pub fn pull_answer(answer: Result<Value, RpcErr>) -> Result<String, String> {
    match answer {
        Ok(result) => Ok(result.get("msg").and_then(Value::as_str).unwrap_or_default().to_string()),
        Err(e) if e.code == 0 => Ok(e.message),
        Err(e) => Err(e.message),
    }
}

/// Sends the head of a `POST /update` and the first `keep` bytes of the bundle, and holds the
/// connection open (the caller cuts the power while it is).
pub fn http_upload_prefix(addr: &str, request: &PushRequest<'_>, keep: usize) -> std::io::Result<TcpStream> {
    const BOUNDARY: &str = "hil-virtual-board-upload";
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.zip\"\r\nContent-Type: application/zip\r\n\r\n"
    );
    let tail = format!(
        "\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"commit_timeout\"\r\n\r\n{}\r\n--{BOUNDARY}--\r\n",
        request.commit_timeout_s
    );
    let length = head.len() + request.bundle.len() + tail.len();
    let mut stream = TcpStream::connect(addr)?;
    stream.set_write_timeout(Some(TRANSFER_TIMEOUT))?;
    write!(
        stream,
        "POST /update HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n{head}"
    )?;
    stream.write_all(&request.bundle[..keep.min(request.bundle.len())])?;
    stream.flush()?;
    Ok(stream)
}

/// A loopback HTTP server that serves one bundle at any path, for pulls: `200` with a
/// Content-Length, and the body (or its first `cut_after` bytes, the connection then held open
/// until the server is dropped).
pub struct BundleServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Receiver<usize>,
    thread: Option<JoinHandle<()>>,
}

/// Connections a bundle server answers before it stops (the device fetches once; redirects and
/// retries stay far below).
const SERVER_CONNECTIONS_MAX: usize = 64;

impl BundleServer {
    pub fn start(bundle: Vec<u8>, cut_after: Option<usize>) -> std::io::Result<BundleServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, served) = mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().take(SERVER_CONNECTIONS_MAX) {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let sent = serve_bundle(&mut stream, &bundle, cut_after);
                let _ = tx.send(sent);
                if cut_after.is_some() {
                    held.push(stream);
                }
            }
        });
        Ok(BundleServer { addr, stop, served, thread: Some(thread) })
    }

    pub fn url(&self) -> String {
        format!("http://{}/fw.zip", self.addr)
    }

    /// The URL as a device reaches this host by `host` (QEMU's user network: 10.0.2.2).
    pub fn url_via(&self, host: &str) -> String {
        format!("http://{host}:{}/fw.zip", self.addr.port())
    }

    /// Waits until a client was served (all it gets).
    pub fn await_served(&self, timeout: Duration) -> Result<usize, &'static str> {
        self.served.recv_timeout(timeout).map_err(|_| "the device's GET of the bundle")
    }
}

impl Drop for BundleServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads a request head (bounded) and answers with the bundle; the bytes of body sent.
fn serve_bundle(stream: &mut TcpStream, bundle: &[u8], cut_after: Option<usize>) -> usize {
    const HEAD_MAX_BYTES: usize = 16 * 1024;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(TRANSFER_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_MAX_BYTES {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = &bundle[..cut_after.unwrap_or(bundle.len()).min(bundle.len())];
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        bundle.len()
    );
    match stream
        .write_all(answer.as_bytes())
        .and_then(|_| stream.write_all(body))
        .and_then(|_| stream.flush())
    {
        Ok(()) => body.len(),
        Err(_) => 0,
    }
}
