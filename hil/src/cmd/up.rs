//! `hil up BOARD_FILE`: starts one provisioned board for a person and prints where to reach it,
//! as `virtual-board` does: `serial=/dev/pts/N` (RPC in Mongoose OS framing, and the console) and
//! `http=127.0.0.1:PORT` (the device's HTTP service, for the seeds' `curl` lines). The board runs
//! until this command is stopped (Ctrl-C), its clock running free. Only the QEMU board needs
//! this: the virtual board is started with `virtual-board` itself.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use super::CommandError;
use crate::board::BoardInfo;
use crate::board::config::{self, Backend};
use crate::board::qemu::{self, Images};
use crate::bundles;
use crate::qemu::qmp::Qmp;
use crate::scenario::model::{Behaviour, BundleSource, BundleSpec};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board file (`boards/qemu.toml`).
    pub board: PathBuf,
    /// The flash file; default a fresh one in the system's temporary folder.
    #[arg(long, value_name = "FILE")]
    pub flash: Option<PathBuf>,
    /// The version the provisioned firmware reports.
    #[arg(long, default_value = "1.0")]
    pub version: String,
    /// The host port forwarded to the device's HTTP port; default a free one.
    #[arg(long)]
    pub http_port: Option<u16>,
}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    let board = config::load(&args.board).map_err(|e| CommandError::new(e.to_string()))?;
    let Backend::Qemu(config) = board.backend else {
        return Err(CommandError::new(format!(
            "{}: hil up starts a QEMU board; this board file is not one",
            args.board.display()
        ))
        .help("start the virtual board with `virtual-board --flash FILE`, which prints its serial= and http= lines"));
    };
    let (boot, fw) = qemu::find_images(&config).map_err(board_error)?;
    let images = Images::load(&boot, &fw).map_err(board_error)?;
    let layout = ota_app::partitions::layout();
    let info = BoardInfo {
        name: board.name.clone(),
        kind: "qemu".into(),
        platform: board.platform.clone(),
        app_slot_bytes: layout.app[0].size_bytes,
        fs_slot_bytes: layout.fs[0].size_bytes,
        app_image: Some(std::sync::Arc::new(images.firmware.bytes.clone())),
    };
    let spec = BundleSpec {
        name: "app".into(),
        version: args.version.clone(),
        build_id: format!("hil/{}", args.version),
        platform: None,
        behaviour: Behaviour::Healthy,
        app_bytes: images.firmware.bytes.len(),
        files: vec![("app.json".into(), format!("{{\"version\":\"{}\"}}", args.version).into_bytes())],
        defect: None,
    };
    let bundle = bundles::build(&BundleSource::Spec(spec), &info).map_err(CommandError::new)?;
    let image = qemu::factory_image(&images.boot_loader.bytes, &board.platform, &bundle.bytes)
        .map_err(|e| CommandError::new(format!("provisioning: {e}")))?;
    let dir = std::env::temp_dir().join(format!("hil-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CommandError::new(format!("cannot create {}: {e}", dir.display())))?;
    let flash = args.flash.clone().unwrap_or_else(|| dir.join("flash.img"));
    std::fs::write(&flash, image)
        .map_err(|e| CommandError::new(format!("cannot write the flash file {}: {e}", flash.display())))?;
    let http_port = match args.http_port {
        Some(port) => port,
        None => {
            qemu::free_port().map_err(|e| CommandError::new(format!("no free TCP port on 127.0.0.1: {e}")))?
        }
    };
    // The clock runs free (no frozen start value), and with `sleep=on` the guest's idle time
    // passes as on the wall clock: with the runner's `sleep=off` an idle board's time races (a
    // `commit_timeout=300` would expire in seconds), and nothing here steps the clock instead.
    let mut qemu_args: Vec<String> = qemu::qemu_args(&config, &flash, &dir, 0)
        .into_iter()
        .map(|arg| if arg.starts_with("shift=") { arg.replace("sleep=off", "sleep=on") } else { arg })
        .collect();
    qemu_args.extend(qemu::qemu_net_args(http_port));
    let mut child = Command::new(&config.qemu)
        .args(&qemu_args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| CommandError::new(format!("cannot start {}: {e}", config.qemu.display())))?;
    let started = (|| -> Result<String, String> {
        let mut qmp = Qmp::connect(&dir.join("qmp"), Duration::from_millis(config.startup_timeout_ms))
            .map_err(|e| e.to_string())?;
        let pty = qemu::serial_pty(&mut qmp)?;
        qmp.cont().map_err(|e| e.to_string())?;
        // QMP stays open: QEMU keeps running when this client goes, but closing it is noise.
        std::mem::forget(qmp);
        Ok(pty)
    })();
    let pty = match started {
        Ok(pty) => pty,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CommandError::new(format!("starting QEMU: {e}")));
        }
    };
    println!("serial={pty}");
    println!("http=127.0.0.1:{http_port}");
    println!("flash={}", flash.display());
    // Stopping this command with SIGKILL leaves QEMU running: a script stops this process.
    println!("qemu_pid={}", child.id());
    let status = child.wait().map_err(|e| CommandError::new(format!("waiting for QEMU: {e}")))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn board_error(e: crate::board::BoardError) -> CommandError {
    CommandError { message: e.message, help: e.help }
}
