//! A small QMP client (QEMU Machine Protocol, JSON over a unix socket): the greeting,
//! `qmp_capabilities`, commands (`cont`, `stop`, `system_reset`, `query-status`) and the
//! asynchronous events (`RESET`, `STOP`, `RESUME`, `SHUTDOWN`) that arrive between replies.
//!
//! One JSON object a line each way. A command's reply is the next line holding `return` or
//! `error`; event lines met on the way are kept for [`Qmp::take_events`] and
//! [`Qmp::await_event`].

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Longest line read from QEMU; a reply past it is refused rather than held.
const LINE_BYTES_MAX: usize = 1 << 20;
/// Events kept between two [`Qmp::take_events`]; older ones are dropped.
const EVENTS_MAX: usize = 1024;

/// A QMP failure: the socket, the protocol, or QEMU's own error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QmpError {
    /// Connecting or reading failed (`what` was being done).
    Io { what: String, reason: String },
    /// The line did not hold what QMP sends.
    Protocol { what: String, line: String },
    /// QEMU answered the command with an error.
    Command { command: String, class: String, desc: String },
    /// Nothing came in time.
    Timeout { what: String, waited: Duration },
}

impl std::fmt::Display for QmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QmpError::Io { what, reason } => write!(f, "QMP: {what}: {reason}"),
            QmpError::Protocol { what, line } => write!(f, "QMP: {what}: unexpected line {line:?}"),
            QmpError::Command { command, class, desc } => write!(f, "QMP {command} failed: {class}: {desc}"),
            QmpError::Timeout { what, waited } => {
                write!(f, "QMP: no answer within {:.1} s (still waiting for {what})", waited.as_secs_f64())
            }
        }
    }
}

impl std::error::Error for QmpError {}

/// An asynchronous event: its name and data.
#[derive(Clone, Debug, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<QmpEvent>,
    timeout: Duration,
}

impl Qmp {
    /// Connects to QEMU's QMP socket (retrying until `timeout` while QEMU creates it), reads the
    /// greeting and enters command mode with `qmp_capabilities`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = super::connect_unix(path, timeout).map_err(|e| QmpError::Io {
            what: format!("connecting to {}", path.display()),
            reason: e.to_string(),
        })?;
        Qmp::handshake(stream, timeout)
    }

    /// The greeting and `qmp_capabilities` on a connected stream.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        let writer = stream.try_clone().map_err(|e| io("cloning the socket", e))?;
        let mut qmp = Qmp { reader: BufReader::new(stream), writer, events: Vec::new(), timeout };
        let greeting = qmp.read_reply("the greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol { what: "the greeting".into(), line: greeting.to_string() });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => {
                QmpError::Io { what: format!("sending {command}"), reason: "QEMU closed the socket".into() }
            }
            _ => io(&format!("sending {command}"), e),
        })?;
        let what = format!("the reply to {command}");
        let reply = self.read_reply(&what)?;
        if let Some(value) = reply.get("return") {
            return Ok(value.clone());
        }
        if let Some(error) = reply.get("error") {
            let text = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
            return Err(QmpError::Command {
                command: command.into(),
                class: text("class"),
                desc: text("desc"),
            });
        }
        Err(QmpError::Protocol { what, line: reply.to_string() })
    }

    /// Starts (or resumes) the CPUs.
    pub fn cont(&mut self) -> Result<(), QmpError> {
        self.execute("cont", None).map(drop)
    }

    /// Stops the CPUs.
    pub fn stop(&mut self) -> Result<(), QmpError> {
        self.execute("stop", None).map(drop)
    }

    /// Presses reset: the machine restarts, RAM and flash kept.
    pub fn system_reset(&mut self) -> Result<(), QmpError> {
        self.execute("system_reset", None).map(drop)
    }

    /// A little-endian 64-bit word of guest physical memory (a device register such as mtime),
    /// read through the human monitor's `xp`: it leaves the CPU running, where the gdbstub would
    /// have to stop it.
    pub fn read_phys_u64(&mut self, addr: u32) -> Result<u64, QmpError> {
        let command = format!("xp /1gx {addr:#x}");
        let reply =
            self.execute("human-monitor-command", Some(serde_json::json!({ "command-line": command })))?;
        let text = reply.as_str().unwrap_or_default();
        // `000000000200bff8: 0x0000000000006b0d`
        text.split_once(": 0x").and_then(|(_, value)| u64::from_str_radix(value.trim(), 16).ok()).ok_or_else(
            || QmpError::Protocol { what: format!("the reply to {command}"), line: reply.to_string() },
        )
    }

    /// `query-status`: the run state (`running`, `paused`, `debug`, …).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let reply = self.execute("query-status", None)?;
        Ok(reply.get("status").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    /// The events seen so far, oldest first.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        std::mem::take(&mut self.events)
    }

    /// Waits for an event named `name` (one already seen counts) and returns it; events before it
    /// are dropped, events after it kept.
    pub fn await_event(&mut self, name: &str, timeout: Duration) -> Result<QmpEvent, QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| e.name == name) {
                let event = self.events[i].clone();
                self.events.drain(..=i);
                return Ok(event);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QmpError::Timeout { what: format!("the {name} event"), waited: timeout });
            }
            self.next_line(&format!("the {name} event"), left)?;
        }
    }

    /// The next line that is not an event; events on the way are kept.
    fn read_reply(&mut self, what: &str) -> Result<Value, QmpError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(reply) = self.next_line(what, left)? {
                return Ok(reply);
            }
        }
    }

    /// Reads one line: an event is kept (and `None` returned), anything else returned.
    fn next_line(&mut self, what: &str, timeout: Duration) -> Result<Option<Value>, QmpError> {
        let limit = timeout.max(Duration::from_millis(1));
        self.reader.get_ref().set_read_timeout(Some(limit)).map_err(|e| io(what, e))?;
        let mut line = String::new();
        match std::io::Read::take(&mut self.reader, LINE_BYTES_MAX as u64).read_line(&mut line) {
            Ok(0) => return Err(QmpError::Io { what: what.into(), reason: "QEMU closed the socket".into() }),
            Ok(_) if !line.ends_with('\n') && line.len() >= LINE_BYTES_MAX => {
                return Err(QmpError::Protocol { what: what.into(), line: format!("{}…", &line[..80]) });
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(QmpError::Timeout { what: what.into(), waited: self.timeout.min(timeout) });
            }
            Err(e) => return Err(io(what, e)),
        }
        let value: Value = serde_json::from_str(line.trim())
            .map_err(|_| QmpError::Protocol { what: what.into(), line: line.trim().into() })?;
        let Some(name) = value.get("event").and_then(Value::as_str) else { return Ok(Some(value)) };
        if self.events.len() < EVENTS_MAX {
            let data = value.get("data").cloned().unwrap_or(Value::Null);
            self.events.push(QmpEvent { name: name.into(), data });
        }
        Ok(None)
    }
}

fn io(what: &str, e: std::io::Error) -> QmpError {
    QmpError::Io { what: what.into(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake QEMU on the other end of a socket pair: it sends the greeting, then answers each
    /// command line from the script (`(expected command, answer lines)`).
    fn fake(script: Vec<(&'static str, Vec<String>)>) -> (Qmp, std::thread::JoinHandle<Vec<String>>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut writer = theirs.try_clone().unwrap();
            let mut reader = BufReader::new(theirs);
            writeln!(writer, r#"{{"QMP": {{"version": {{"qemu": {{"major": 7}}}}, "capabilities": []}}}}"#)
                .unwrap();
            let mut seen = Vec::new();
            for (_, answers) in script {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                let request: Value = serde_json::from_str(&line).unwrap();
                seen.push(request["execute"].as_str().unwrap().to_string());
                for answer in answers {
                    writeln!(writer, "{answer}").unwrap();
                }
            }
            seen
        });
        let qmp = Qmp::handshake(ours, Duration::from_secs(5)).unwrap();
        (qmp, peer)
    }

    fn ok() -> String {
        r#"{"return": {}}"#.into()
    }

    #[test]
    fn commands_get_their_replies_and_events_in_between_are_kept() {
        let reset = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}"#;
        let (mut qmp, peer) = fake(vec![
            ("qmp_capabilities", vec![ok()]),
            (
                "cont",
                vec![r#"{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "RESUME"}"#.into(), ok()],
            ),
            ("system_reset", vec![ok(), reset.into()]),
            ("query-status", vec![r#"{"return": {"status": "running", "running": true}}"#.into()]),
            ("stop", vec![r#"{"error": {"class": "GenericError", "desc": "nope"}}"#.into()]),
        ]);
        qmp.cont().unwrap();
        qmp.system_reset().unwrap();
        let event = qmp.await_event("RESET", Duration::from_secs(5)).unwrap();
        assert_eq!(event.data["reason"], "host-qmp-system-reset");
        assert_eq!(qmp.status().unwrap(), "running");
        assert_eq!(qmp.stop().unwrap_err().to_string(), "QMP stop failed: GenericError: nope");
        assert_eq!(qmp.take_events(), Vec::new(), "RESUME came before RESET and was dropped with it");
        drop(qmp);
        assert_eq!(
            peer.join().unwrap(),
            ["qmp_capabilities", "cont", "system_reset", "query-status", "stop"]
        );
    }

    #[test]
    fn a_device_word_is_read_through_the_monitor_and_a_strange_reply_is_named() {
        let (mut qmp, peer) = fake(vec![
            ("qmp_capabilities", vec![ok()]),
            (
                "human-monitor-command",
                vec![r#"{"return": "000000000200bff8: 0x0000000000006b0d\r\n"}"#.into()],
            ),
            ("human-monitor-command", vec![r#"{"return": "Cannot access memory\r\n"}"#.into()]),
        ]);
        assert_eq!(qmp.read_phys_u64(0x200_bff8).unwrap(), 0x6b0d);
        assert_eq!(
            qmp.read_phys_u64(0x200_bff8).unwrap_err().to_string(),
            r#"QMP: the reply to xp /1gx 0x200bff8: unexpected line "\"Cannot access memory\\r\\n\"""#
        );
        drop(qmp);
        assert_eq!(
            peer.join().unwrap(),
            ["qmp_capabilities", "human-monitor-command", "human-monitor-command"]
        );
    }

    #[test]
    fn a_closed_socket_and_a_silent_peer_are_errors_that_say_so() {
        let (mut qmp, peer) = fake(vec![("qmp_capabilities", vec![ok()])]);
        peer.join().unwrap();
        assert_eq!(qmp.cont().unwrap_err().to_string(), "QMP: sending cont: QEMU closed the socket");
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let silent = Qmp::handshake(ours, Duration::from_millis(20)).err().unwrap();
        assert_eq!(silent.to_string(), "QMP: no answer within 0.0 s (still waiting for the greeting)");
    }
}
