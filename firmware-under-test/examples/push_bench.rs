//! Push a 1 MiB bundle to a virtual board over HTTP (`POST /update`) and over serial RPC
//! (`OTA.Begin`, `OTA.Write`…, `OTA.End` on the pty, Mongoose OS framing with CRC), and print
//! the figures.
//!
//!     cargo run --release -p ota-firmware --example push_bench [-- --app-kib 1024 --chunk 512 --runs 3]
//!
//! Each push is timed from the first byte sent to the device's "Update applied" reply (the
//! flash writes and the read-back checks included); the device then reboots into the new image,
//! which commits itself, and the next push goes to the other slot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ota_app::image::Image;
use ota_bundle::Bundle;
use ota_firmware::board::{self, Options};
use serde_json::{Value, json};

fn main() {
    let mut app_kib = 1024usize;
    let mut chunk = 512usize;
    let mut runs = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: usize =
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} takes a number"));
        match flag.as_str() {
            "--app-kib" => app_kib = value,
            "--chunk" => chunk = value,
            "--runs" => runs = value,
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = std::env::temp_dir().join(format!("push-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = dir.join("v1.zip");
    std::fs::write(&v1, bundle("1.0.0", app_kib)).unwrap();
    let mut options =
        Options::parse(["--flash".to_string(), dir.join("flash").display().to_string()]).unwrap();
    options.provision = Some(v1);
    options.app_slot_kib = (app_kib as u32 + 64).next_multiple_of(4);
    options.fs_slot_kib = 64;
    options.platform = "host".into();
    let ports = board::spawn(options).expect("the board starts");
    let http = ports.http.unwrap();
    let mut serial = Serial::open(&ports.serial.unwrap());
    let mut version = 2;
    for run in 0..runs {
        let zip = bundle(&format!("{version}.0.0"), app_kib);
        let seconds = push_http(&http, &zip);
        wait_for(&http, &format!("{version}.0.0"));
        println!(
            "{{\"transport\":\"http\",\"run\":{run},\"bundle_bytes\":{},\"seconds\":{seconds:.3},\"mb_per_s\":{:.2}}}",
            zip.len(),
            zip.len() as f64 / seconds / 1e6
        );
        version += 1;
        let zip = bundle(&format!("{version}.0.0"), app_kib);
        let seconds = serial.push(&zip, chunk);
        wait_for(&http, &format!("{version}.0.0"));
        println!(
            "{{\"transport\":\"serial-rpc\",\"run\":{run},\"chunk_bytes\":{chunk},\"bundle_bytes\":{},\"seconds\":{seconds:.3},\"payload_mb_per_s\":{:.2}}}",
            zip.len(),
            zip.len() as f64 / seconds / 1e6
        );
        version += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn bundle(version: &str, app_kib: usize) -> Vec<u8> {
    let fs = ota_lfs::build_image(64 * 1024, 4096, &[("app.json", version.as_bytes())]);
    Bundle::new("bench", "host")
        .version(version)
        .app(Image::new(version, app_kib * 1024).bytes())
        .fs(fs)
        .build()
}

/// `POST /update` with the bundle as a multipart file, as `curl -F file=@fw.zip` sends it.
fn push_http(addr: &str, zip: &[u8]) -> f64 {
    let boundary = "------------------------benchboundary";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.zip\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend_from_slice(zip);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /update HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(reply.contains("Update applied, finalizing"), "{reply}");
    seconds
}

fn wait_for(http: &str, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(http) {
            let _ = s.write_all(format!("GET /rpc/Sys.GetInfo HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes());
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            if reply.contains(&format!("\"fw_version\":\"{version}\"")) && reply.contains("\"ota_slot\"") {
                std::thread::sleep(Duration::from_millis(20));
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{version} never ran");
}

struct Serial {
    writer: std::fs::File,
    reader: BufReader<std::fs::File>,
    id: u64,
}

impl Serial {
    fn open(path: &str) -> Serial {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        assert!(Command::new("stty").arg("-F").arg(path).args(["raw", "-echo"]).status().unwrap().success());
        Serial { writer: file.try_clone().unwrap(), reader: BufReader::new(file), id: 0 }
    }

    fn call(&mut self, method: &str, params: Value) -> String {
        self.id += 1;
        let request = json!({"id": self.id, "src": "bench", "method": method, "params": params}).to_string();
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(request.as_bytes());
        self.writer.write_all(format!("{request}{crc:08x}\n").as_bytes()).unwrap();
        let tag = format!("\"id\":{},", self.id);
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line.contains(&tag) {
                return line;
            }
        }
    }

    fn push(&mut self, zip: &[u8], chunk: usize) -> f64 {
        let started = Instant::now();
        let begin = self.call("OTA.Begin", json!({"timeout": 600, "commit_timeout": 0, "size": zip.len()}));
        assert!(begin.contains("\"result\""), "{begin}");
        for (i, piece) in zip.chunks(chunk).enumerate() {
            let data = base64::engine::general_purpose::STANDARD.encode(piece);
            let reply = self.call("OTA.Write", json!({"offset": i * chunk, "data": data}));
            assert!(reply.contains("\"result\""), "{reply}");
        }
        let end = self.call("OTA.End", json!({}));
        assert!(end.contains("Update applied, finalizing"), "{end}");
        started.elapsed().as_secs_f64()
    }
}
