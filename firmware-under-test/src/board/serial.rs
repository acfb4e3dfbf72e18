//! The UART: a pseudo-terminal carrying RPC frames in Mongoose OS's framing, and the console.

use std::io::Read;
use std::sync::{Arc, Mutex};

use serialport::{SerialPort, TTYPort};

use super::{Console, SharedDevice, lock};
use crate::rpc::uart::{DEFAULT_MAX_FRAME_BYTES, Decoder, Encoder, Item};

/// Opens the pty and starts the thread that serves it; returns the path a client opens.
pub fn start(device: SharedDevice, console: Console) -> Result<String, String> {
    let (mut master, slave) = TTYPort::pair().map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
    let name = slave.name().ok_or("the pseudo-terminal has no name")?;
    master.set_timeout(std::time::Duration::from_secs(24 * 3600)).map_err(|e| e.to_string())?;
    let writer = master.try_clone_native().map_err(|e| format!("cannot share the pseudo-terminal: {e}"))?;
    console.attach(Box::new(writer));
    std::thread::spawn(move || {
        // Held open so that reads wait for a client instead of failing while none is attached.
        let _slave = slave;
        serve(&mut master, &device, &console);
    });
    Ok(name)
}

fn serve(port: &mut TTYPort, device: &SharedDevice, console: &Console) {
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
    let encoder = Arc::new(Mutex::new(Encoder::new()));
    let mut buf = [0u8; 4096];
    loop {
        let n = match port.read(&mut buf) {
            Ok(0) => continue,
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                continue;
            }
            Err(e) => {
                eprintln!("virtual-board: serial read failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        decoder.feed(&buf[..n], |item| on_item(item, device, console, &encoder));
    }
}

fn on_item(item: Item, device: &SharedDevice, console: &Console, encoder: &Arc<Mutex<Encoder>>) {
    if let Some(reply) = item.device_reply() {
        console.serial_write(reply);
        return;
    }
    match item {
        Item::Frame { json, style } => {
            let (console, encoder) = (console.clone(), encoder.clone());
            // Bytes that are not a request get no answer on the UART, as rpc-uart gives none.
            let handled = super::rpc::handle_frame(device, &json, move |reply| {
                let bytes = lock(&encoder).encode(reply.as_bytes(), style);
                console.serial_write(&bytes);
            });
            if let Err(error) = handled {
                eprintln!("virtual-board: serial: dropped a frame: {error}");
            }
        }
        Item::Junk(_) => {}
        other => eprintln!("virtual-board: serial: {other:?}"),
    }
}
