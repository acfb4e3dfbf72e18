//! A Mosquitto broker of the runner's own, for the MQTT channel and ota-shadow: started on
//! loopback on a free port with a generated configuration in a temporary folder, stopped (and the
//! folder removed) when dropped, so nothing lingers. Mosquitto comes from Debian's package
//! (`apt-get install mosquitto`); nothing here imitates it.
//!
//! The file is std-only, so that the device's tests use the same broker
//! (`#[path]` from `firmware-under-test/tests/`).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long Mosquitto may take to say it runs.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Mosquitto.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Broker {
    /// Starts Mosquitto on 127.0.0.1 on a free port, with persistence in its own folder (the
    /// retained shadow documents survive a [`Broker::restart`]).
    pub fn start() -> Result<Broker, String> {
        Broker::start_with(None)
    }

    /// The same, refusing clients without this user name and password (a password file made
    /// with `mosquitto_passwd`).
    pub fn start_with_credentials(user: &str, pass: &str) -> Result<Broker, String> {
        Broker::start_with(Some((user, pass)))
    }

    fn start_with(credentials: Option<(&str, &str)>) -> Result<Broker, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port for the broker: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("hil-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut conf = format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nmax_packet_size 2000000\nset_tcp_nodelay true\n",
            dir.display()
        );
        match credentials {
            None => conf.push_str("allow_anonymous true\n"),
            Some((user, pass)) => {
                let file = dir.join("passwords");
                let made = Command::new("mosquitto_passwd")
                    .arg("-b")
                    .arg("-c")
                    .arg(&file)
                    .args([user, pass])
                    .status()
                    .map_err(|e| format!("cannot run mosquitto_passwd: {e}"))?;
                if !made.success() {
                    return Err(format!("mosquitto_passwd failed ({made}) for {}", file.display()));
                }
                conf.push_str(&format!("allow_anonymous false\npassword_file {}\n", file.display()));
            }
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut broker = Broker { child: None, port, dir };
        broker.spawn()?;
        Ok(broker)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto: {e} (install it: apt-get install mosquitto)"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        self.child = Some(child);
        let (ready, wait) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" running") {
                    let _ = ready.send(Ok(()));
                }
                tail.push(line);
            }
            let _ = ready.send(Err(tail.join("\n")));
        });
        match wait.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(tail)) => Err(format!("mosquitto ended at start on port {}:\n{tail}", self.port)),
            Err(_) => Err(format!("mosquitto did not say it runs within {START_TIMEOUT:?}")),
        }
    }

    /// `HOST:PORT`, as `mqtt.server` takes it.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM: it saves its retained messages) and waits for it to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with what it saved.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
