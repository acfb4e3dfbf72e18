//! A small GDB remote serial protocol client, enough to drive QEMU's gdbstub: software
//! breakpoints (`Z0`/`z0`), continue (`c`), interrupt (the 0x03 byte), registers (`g`, `p`),
//! memory (`m`, `M`) and stop replies (`S`, `T`, `W`, `X`).
//!
//! Packets are `$payload#xx` with a two-digit checksum (the payload's bytes summed modulo 256).
//! Until `QStartNoAckMode` is accepted each packet is acknowledged with `+`; run-length encoded
//! replies (`x*n`: repeat `x` `n - 29` more times) are expanded.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest packet accepted; a `g` reply of a 33-register RV32 is 264 bytes.
const PACKET_BYTES_MAX: usize = 64 * 1024;
/// The most bytes read in one `m` packet (QEMU's packet buffer holds more).
const MEMORY_CHUNK_BYTES: usize = 1024;

/// A gdbstub failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GdbError {
    Io {
        what: String,
        reason: String,
    },
    /// The stub's line ended: QEMU is gone (a power cut kills it).
    Closed {
        what: String,
    },
    /// A reply that is not what the protocol says.
    Protocol {
        what: String,
        reply: String,
    },
    /// The stub answered `Enn`.
    Refused {
        what: String,
        code: String,
    },
    Timeout {
        what: String,
        waited: Duration,
    },
}

impl std::fmt::Display for GdbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GdbError::Io { what, reason } => write!(f, "gdbstub: {what}: {reason}"),
            GdbError::Closed { what } => write!(f, "gdbstub: {what}: QEMU closed the connection"),
            GdbError::Protocol { what, reply } => write!(f, "gdbstub: {what}: unexpected reply {reply:?}"),
            GdbError::Refused { what, code } => write!(f, "gdbstub: {what} refused with {code}"),
            GdbError::Timeout { what, waited } => {
                write!(
                    f,
                    "gdbstub: no answer within {:.1} s (still waiting for {what})",
                    waited.as_secs_f64()
                )
            }
        }
    }
}

impl std::error::Error for GdbError {}

/// Why the target stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Stopped with a signal (5 = SIGTRAP: a breakpoint; 2 = SIGINT: an interrupt), and the
    /// `T` reply's `key:value` pairs (`thread`, …).
    Signal { signal: u8, info: Vec<(String, String)> },
    /// The target exited with this status.
    Exited { status: u8 },
    /// The target was killed by this signal.
    Killed { signal: u8 },
}

pub const SIGINT: u8 = 2;
pub const SIGTRAP: u8 = 5;

pub struct Gdb {
    stream: UnixStream,
    /// Bytes read past the last packet.
    pending: Vec<u8>,
    acks: bool,
    timeout: Duration,
}

impl Gdb {
    /// Connects to a gdbstub on a unix socket (retrying until `timeout` while QEMU creates it)
    /// and switches acknowledgements off when the stub allows.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Gdb, GdbError> {
        let stream = super::connect_unix(path, timeout).map_err(|e| GdbError::Io {
            what: format!("connecting to {}", path.display()),
            reason: e.to_string(),
        })?;
        Gdb::on(stream, timeout)
    }

    /// A client on a connected stream.
    pub fn on(stream: UnixStream, timeout: Duration) -> Result<Gdb, GdbError> {
        let mut gdb = Gdb { stream, pending: Vec::new(), acks: true, timeout };
        if gdb.request("QStartNoAckMode")? == "OK" {
            gdb.acks = false;
        }
        Ok(gdb)
    }

    /// Sends one packet and returns the reply's payload.
    pub fn request(&mut self, payload: &str) -> Result<String, GdbError> {
        self.send(payload)?;
        self.receive(payload, self.timeout)
    }

    /// Why the target is stopped (`?`).
    pub fn stop_reason(&mut self) -> Result<Stop, GdbError> {
        let reply = self.request("?")?;
        parse_stop(&reply).ok_or(GdbError::Protocol { what: "?".into(), reply })
    }

    pub fn set_breakpoint(&mut self, addr: u32) -> Result<(), GdbError> {
        self.expect_ok(&format!("Z0,{addr:x},2"))
    }

    pub fn clear_breakpoint(&mut self, addr: u32) -> Result<(), GdbError> {
        self.expect_ok(&format!("z0,{addr:x},2"))
    }

    /// Continues (`c`); the stop reply comes later, from [`Gdb::await_stop`].
    pub fn resume(&mut self) -> Result<(), GdbError> {
        self.send("c")
    }

    /// Runs one instruction (`s`) and waits for the stop.
    pub fn step(&mut self) -> Result<Stop, GdbError> {
        self.send("s")?;
        self.await_stop(self.timeout)
    }

    /// Waits for the stop reply of a running target.
    pub fn await_stop(&mut self, timeout: Duration) -> Result<Stop, GdbError> {
        let reply = self.receive("the stop reply", timeout)?;
        parse_stop(&reply).ok_or(GdbError::Protocol { what: "the stop reply".into(), reply })
    }

    /// Stops a running target (the 0x03 byte); its stop reply follows.
    pub fn interrupt(&mut self) -> Result<Stop, GdbError> {
        self.stream.write_all(&[0x03]).map_err(|e| io("sending the interrupt", e))?;
        self.await_stop(self.timeout)
    }

    /// All general registers (`g`), as 32-bit little-endian words: x0..x31 then pc on RV32.
    pub fn registers(&mut self) -> Result<Vec<u32>, GdbError> {
        let reply = self.request("g")?;
        let bytes =
            hex_bytes(&reply).ok_or_else(|| GdbError::Protocol { what: "g".into(), reply: reply.clone() })?;
        Ok(bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect())
    }

    /// One register, numbered as gdb numbers them (RV32: 10 is a0, 32 is pc). Read through `g`:
    /// QEMU answers `p` only to a client that fetched its target description first.
    pub fn register(&mut self, number: u32) -> Result<u32, GdbError> {
        let registers = self.registers()?;
        registers.get(number as usize).copied().ok_or_else(|| GdbError::Protocol {
            what: format!("register {number}"),
            reply: format!("{} registers", registers.len()),
        })
    }

    /// `len` bytes of memory from `addr` (`m`).
    pub fn read_memory(&mut self, addr: u32, len: usize) -> Result<Vec<u8>, GdbError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = addr.wrapping_add(out.len() as u32);
            let n = (len - out.len()).min(MEMORY_CHUNK_BYTES);
            let what = format!("m{at:x},{n:x}");
            let reply = self.request(&what)?;
            match hex_bytes(&reply) {
                Some(bytes) if bytes.len() == n => out.extend_from_slice(&bytes),
                _ => return Err(GdbError::Protocol { what, reply }),
            }
        }
        Ok(out)
    }

    /// A little-endian 64-bit word of memory (mtime, say).
    pub fn read_u64(&mut self, addr: u32) -> Result<u64, GdbError> {
        let bytes = self.read_memory(addr, 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("read_memory returns what it was asked for")))
    }

    /// Writes memory (`M`).
    pub fn write_memory(&mut self, addr: u32, bytes: &[u8]) -> Result<(), GdbError> {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.expect_ok(&format!("M{addr:x},{:x}:{hex}", bytes.len()))
    }

    fn expect_ok(&mut self, payload: &str) -> Result<(), GdbError> {
        let what = payload.split(':').next().unwrap_or(payload).to_string();
        match self.request(payload)? {
            reply if reply == "OK" => Ok(()),
            reply if reply.starts_with('E') => Err(GdbError::Refused { what, code: reply }),
            reply => Err(GdbError::Protocol { what, reply }),
        }
    }

    fn send(&mut self, payload: &str) -> Result<(), GdbError> {
        let packet = format!("${payload}#{:02x}", checksum(payload.as_bytes()));
        self.stream.write_all(packet.as_bytes()).map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => GdbError::Closed { what: payload.into() },
            _ => io(&format!("sending {payload}"), e),
        })
    }

    /// The next packet's payload (acks and noise before `$` skipped); acknowledged when acks
    /// are on.
    fn receive(&mut self, what: &str, timeout: Duration) -> Result<String, GdbError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(start) = self.pending.iter().position(|&b| b == b'$') {
                if let Some(hash) = self.pending[start..].iter().position(|&b| b == b'#').map(|h| start + h)
                    && self.pending.len() >= hash + 3
                {
                    let body = self.pending[start + 1..hash].to_vec();
                    let sum = std::str::from_utf8(&self.pending[hash + 1..hash + 3]).ok();
                    let sum = sum.and_then(|s| u8::from_str_radix(s, 16).ok());
                    self.pending.drain(..hash + 3);
                    if sum != Some(checksum(&body)) {
                        return Err(GdbError::Protocol {
                            what: what.into(),
                            reply: format!(
                                "a packet with a wrong checksum: {}",
                                String::from_utf8_lossy(&body)
                            ),
                        });
                    }
                    if self.acks {
                        // The reply is in hand: a line that closed since is the next call's news.
                        let _ = self.stream.write_all(b"+");
                    }
                    return Ok(expand(&body));
                }
            } else {
                self.pending.clear();
            }
            if self.pending.len() > PACKET_BYTES_MAX {
                return Err(GdbError::Protocol { what: what.into(), reply: "a packet over 64 KiB".into() });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(GdbError::Timeout { what: what.into(), waited: timeout });
            }
            self.stream.set_read_timeout(Some(left)).map_err(|e| io(what, e))?;
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(GdbError::Closed { what: what.into() }),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(GdbError::Timeout { what: what.into(), waited: timeout });
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return Err(GdbError::Closed { what: what.into() });
                }
                Err(e) => return Err(io(what, e)),
            }
        }
    }
}

fn io(what: &str, e: std::io::Error) -> GdbError {
    GdbError::Io { what: what.into(), reason: e.to_string() }
}

pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// A payload with its run-length encoding expanded, as text.
fn expand(body: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match (body[i], out.last().copied(), body.get(i + 1)) {
            (b'*', Some(previous), Some(&count)) if count >= 29 => {
                out.extend(std::iter::repeat_n(previous, usize::from(count - 29)));
                i += 2;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// `S05`, `T05thread:01;`, `W00`, `X09`.
pub fn parse_stop(reply: &str) -> Option<Stop> {
    let code = u8::from_str_radix(reply.get(1..3)?, 16).ok()?;
    match reply.as_bytes()[0] {
        b'S' => Some(Stop::Signal { signal: code, info: Vec::new() }),
        b'T' => {
            let info = (reply[3..].split(';').filter(|p| !p.is_empty()))
                .filter_map(|p| p.split_once(':').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            Some(Stop::Signal { signal: code, info })
        }
        b'W' => Some(Stop::Exited { status: code }),
        b'X' => Some(Stop::Killed { signal: code }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake stub: for each expected packet, checks it arrived whole and sends the answer.
    /// `None` as the expected packet means the 0x03 interrupt byte.
    fn fake(script: Vec<(Option<&'static str>, Vec<u8>)>) -> (Gdb, std::thread::JoinHandle<()>) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut acks = true;
            for (expected, answer) in script {
                let got = read_packet(&mut theirs, expected.is_none());
                match expected {
                    None => assert_eq!(got, "\u{3}"),
                    Some(expected) => assert_eq!(got, expected),
                }
                if acks && expected.is_some() {
                    theirs.write_all(b"+").unwrap();
                }
                if expected == Some("QStartNoAckMode") {
                    acks = false;
                }
                theirs.write_all(&answer).unwrap();
            }
        });
        let gdb = Gdb::on(ours, Duration::from_secs(5)).unwrap();
        (gdb, peer)
    }

    fn read_packet(stream: &mut UnixStream, interrupt: bool) -> String {
        let mut byte = [0u8];
        let mut text = Vec::new();
        loop {
            stream.read_exact(&mut byte).unwrap();
            if interrupt && byte[0] == 3 {
                return "\u{3}".into();
            }
            if byte[0] == b'$' {
                break;
            }
        }
        loop {
            stream.read_exact(&mut byte).unwrap();
            if byte[0] == b'#' {
                break;
            }
            text.push(byte[0]);
        }
        let mut sum = [0u8; 2];
        stream.read_exact(&mut sum).unwrap();
        assert_eq!(u8::from_str_radix(std::str::from_utf8(&sum).unwrap(), 16).unwrap(), checksum(&text));
        String::from_utf8(text).unwrap()
    }

    fn packet(payload: &str) -> Vec<u8> {
        format!("${payload}#{:02x}", checksum(payload.as_bytes())).into_bytes()
    }

    #[test]
    fn breakpoints_continue_stop_registers_and_memory() {
        let mut registers = String::new();
        for i in 0..33u32 {
            let value = if i == 32 {
                0x8000_0100
            } else if i == 10 {
                7
            } else {
                i
            };
            registers += &value.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>();
        }
        let (mut gdb, peer) = fake(vec![
            (Some("QStartNoAckMode"), packet("OK")),
            (Some("Z0,80000100,2"), packet("OK")),
            (Some("c"), packet("T05thread:p01.01;")),
            (Some("g"), packet(&registers)),
            (Some("g"), packet(&registers)),
            (Some("m2000000,4"), packet("deadbeef")),
            (Some("M2000000,2:0102"), packet("OK")),
            (Some("z0,80000100,2"), packet("E22")),
            (Some("c"), Vec::new()),
            (None, packet("T02thread:p01.01;")),
            (Some("?"), packet("S05")),
        ]);
        gdb.set_breakpoint(0x8000_0100).unwrap();
        gdb.resume().unwrap();
        let stop = gdb.await_stop(Duration::from_secs(5)).unwrap();
        assert_eq!(stop, Stop::Signal { signal: SIGTRAP, info: vec![("thread".into(), "p01.01".into())] });
        let regs = gdb.registers().unwrap();
        assert_eq!((regs.len(), regs[10], regs[32]), (33, 7, 0x8000_0100));
        assert_eq!(gdb.register(10).unwrap(), 7);
        assert_eq!(gdb.read_memory(0x200_0000, 4).unwrap(), [0xde, 0xad, 0xbe, 0xef]);
        gdb.write_memory(0x200_0000, &[1, 2]).unwrap();
        assert_eq!(
            gdb.clear_breakpoint(0x8000_0100).unwrap_err().to_string(),
            "gdbstub: z0,80000100,2 refused with E22"
        );
        gdb.resume().unwrap();
        assert!(matches!(gdb.interrupt().unwrap(), Stop::Signal { signal: SIGINT, .. }));
        assert_eq!(gdb.stop_reason().unwrap(), Stop::Signal { signal: SIGTRAP, info: Vec::new() });
        peer.join().unwrap();
    }

    #[test]
    fn acks_stay_on_when_the_stub_refuses_no_ack_mode_and_a_closed_stub_is_named() {
        let (mut gdb, peer) = fake(vec![(Some("QStartNoAckMode"), packet("")), (Some("?"), packet("W00"))]);
        assert!(gdb.acks);
        assert_eq!(gdb.stop_reason().unwrap(), Stop::Exited { status: 0 });
        peer.join().unwrap();
        assert_eq!(gdb.stop_reason().unwrap_err(), GdbError::Closed { what: "?".into() });
    }

    #[test]
    fn run_length_encoding_is_expanded_and_stop_replies_parse() {
        assert_eq!(expand(b"0* "), "0000");
        assert_eq!(expand(b"ab*!c"), "abbbbbc");
        assert_eq!(parse_stop("X09"), Some(Stop::Killed { signal: 9 }));
        assert_eq!(parse_stop("OK"), None);
    }
}
