//! What the runner needs to drive QEMU: its machine protocol ([`qmp`]), its gdbstub ([`gdb`])
//! and the ELF files it runs ([`elf`]). The `qemu` board (`board::qemu`) is built on these.

pub mod elf;
pub mod gdb;
pub mod qmp;

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Connects to a unix socket QEMU serves, retrying until `timeout` while QEMU has not yet
/// created it (or not yet listens); any other error, or the last one, is returned.
pub fn connect_unix(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Err(e)
                if Instant::now() < deadline
                    && matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}
