//! The two binaries on QEMU, started as the runner starts them: a factory `flash.img` (the boot
//! loader at 0, v1.0.0 of the application provisioned into ota_0 by `ota-core`), `-S`, the pty,
//! QMP, `cont`. The tests ask `Sys.GetInfo`; push an update over the UART and boot its trial
//! (merge, self-commit), then push one that crashes at boot and see the real trap revert it;
//! and reset a hanging image through QMP with the flash kept.
//!
//! It needs `qemu-system-riscv32` and the two riscv32 binaries:
//!
//! ```text
//! cargo build --release -p ota-port-qemu-virt --target riscv32imc-unknown-none-elf --bins
//! cargo test -p ota-port-qemu-virt --test qemu -- --nocapture
//! ```
//!
//! Without them each test prints what is missing and passes, unless `HIL_REQUIRE_QEMU_BOARD=1`
//! (CI sets it after building the binaries), which makes a missing part a failure. It prints the
//! boot loader's size, the image's size and the boot loader's mtime at its jump.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ota_core::flash::RamFlash;
use ota_core::layout::Slot;
use ota_core::updater::{Device, Updater};
use ota_port_qemu_virt::{LAYOUT, PLATFORM};

const FLASH_IMG_BYTES: usize = 32 * 1024 * 1024;
/// A bound on the whole exchange, so that a broken image fails the test instead of hanging it;
/// the exchange takes well under a second.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

fn binaries() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"), PathBuf::from);
    target.join("riscv32imc-unknown-none-elf/release")
}

/// The file bytes of an ELF32's PT_LOAD segments, from the lowest physical address, gaps filled
/// with 0 (as the runner flattens them); and the entry point.
fn flatten(elf: &[u8]) -> (Vec<u8>, u32, u32) {
    assert_eq!(&elf[..5], b"\x7fELF\x01", "an ELF32");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let (entry, phoff, phentsize, phnum) = (u32_at(24), u32_at(28) as usize, u16_at(42), u16_at(44));
    let mut loads = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (kind, offset, paddr, filesz) = (u32_at(ph), u32_at(ph + 4), u32_at(ph + 12), u32_at(ph + 16));
        if kind == 1 && filesz > 0 {
            loads.push((paddr, &elf[offset as usize..(offset + filesz) as usize]));
        }
    }
    let low = loads.iter().map(|(p, _)| *p).min().expect("a loadable segment");
    let high = loads.iter().map(|(p, d)| p + d.len() as u32).max().unwrap();
    let mut out = vec![0u8; (high - low) as usize];
    for (paddr, data) in loads {
        let at = (paddr - low) as usize;
        out[at..at + data.len()].copy_from_slice(data);
    }
    (out, low, entry)
}

/// The factory image: 0xff, the boot loader at 0, v1.0.0 committed in ota_0, fs_0 formatted.
fn flash_img(boot: &[u8], app: Vec<u8>) -> Vec<u8> {
    let mut img = vec![0xff; FLASH_IMG_BYTES];
    img[..boot.len()].copy_from_slice(boot);
    let map_bytes = ota_app::partitions::FLASH_BYTES as usize;
    let mut flash = RamFlash::<4, 4096>::with_contents(&mut img[..map_bytes]);
    let bundle = ota_bundle::Bundle::new("ota-qemu-fw", PLATFORM).version("1.0.0").app(app).build();
    let device = Device { arch: ota_core::manifest::Platform::new(PLATFORM).unwrap(), app_part: None };
    let mut updater = Updater::begin_provision(&mut flash, &LAYOUT, device, vec![0; 4096]).unwrap();
    updater.process(&mut flash, &bundle).unwrap();
    updater.finish(&mut flash).unwrap();
    ota_lfs::format(&mut flash, LAYOUT.fs(Slot::S0)).unwrap();
    img
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A started board: QEMU, its pty, the work folder.
struct Board {
    qemu: Qemu,
    qmp: UnixStream,
    qmp_in: BufReader<UnixStream>,
    port: serialport::TTYPort,
    seen: String,
    work: PathBuf,
    next_id: u64,
}

/// Whether QEMU and both binaries are here; prints what is missing (a failure when
/// `HIL_REQUIRE_QEMU_BOARD=1`).
fn ready() -> bool {
    let required = std::env::var_os("HIL_REQUIRE_QEMU_BOARD").is_some_and(|v| v == "1");
    let mut missing: Vec<String> = ["ota-qemu-boot", "ota-qemu-fw"]
        .iter()
        .map(|name| binaries().join(name))
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    if Command::new("qemu-system-riscv32").arg("--version").output().is_err() {
        missing.push("qemu-system-riscv32 on PATH".into());
    }
    if missing.is_empty() {
        return true;
    }
    assert!(!required, "HIL_REQUIRE_QEMU_BOARD=1 but these are missing: {missing:?}");
    eprintln!("qemu: skipped: missing {missing:?} (set HIL_REQUIRE_QEMU_BOARD=1 to make this a failure)");
    false
}

fn read_binary(name: &str) -> Vec<u8> {
    let path = binaries().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it first: cargo build --release -p ota-port-qemu-virt \
             --target riscv32imc-unknown-none-elf --bins",
            path.display()
        )
    })
}

/// The two binaries, flattened and checked: (boot loader bytes, application image).
fn images() -> (Vec<u8>, Vec<u8>) {
    let (boot, boot_low, boot_entry) = flatten(&read_binary("ota-qemu-boot"));
    let (app, app_low, app_entry) = flatten(&read_binary("ota-qemu-fw"));
    assert_eq!((boot_low, boot_entry), (0x2000_0000, 0x2000_0000), "the boot loader runs from flash");
    assert_eq!(app_entry, app_low + 0x100, "the entry point follows the app descriptor");
    assert!(boot.len() <= 0x8000, "the boot loader is {} bytes, over 0x8000", boot.len());
    (boot, app)
}

impl Board {
    /// Writes the factory image and starts QEMU as the runner does (`-S`, pty, QMP, `cont`),
    /// with the clock frozen at 0 when `frozen`.
    fn start(name: &str, boot: &[u8], app: Vec<u8>, frozen: bool) -> Board {
        let work = std::env::temp_dir().join(format!("ota-qemu-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&work).unwrap();
        let img = work.join("flash.img");
        std::fs::write(&img, flash_img(boot, app)).unwrap();
        let qmp_path = work.join("qmp.sock");
        let mut command = Command::new("qemu-system-riscv32");
        command
            .args(["-machine", "virt", "-display", "none", "-bios", "none", "-monitor", "none"])
            .args(["-icount", "shift=0,sleep=off"])
            .arg("-drive")
            .arg(format!("if=pflash,unit=0,format=raw,file={}", img.display()))
            .args(["-serial", "pty", "-S"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .stdout(Stdio::piped());
        if frozen {
            let word = ota_port_qemu_virt::clock::loader_word(0, true);
            command.arg("-device").arg(format!(
                "loader,addr={:#x},data={word:#x},data-len=8",
                ota_port_qemu_virt::clock::LOADER_WORD_ADDRESS
            ));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("qemu-system-riscv32 does not start ({e}); install qemu-system-misc"));
        let mut qemu = Qemu(child);
        let pty = pty_path(&mut qemu);
        let port = serialport::new(&pty, 115_200).timeout(READ_TIMEOUT).open_native().unwrap();
        let mut qmp = UnixStream::connect(&qmp_path).unwrap();
        qmp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut qmp_in = BufReader::new(qmp.try_clone().unwrap());
        let mut greeting = String::new();
        qmp_in.read_line(&mut greeting).unwrap();
        for command in [r#"{"execute":"qmp_capabilities"}"#, r#"{"execute":"cont"}"#] {
            qmp_command(&mut qmp, &mut qmp_in, command);
        }
        Board { qemu, qmp, qmp_in, port, seen: String::new(), work, next_id: 1 }
    }

    /// The next whole line holding `needle` (kick lines are not echoed).
    fn line_with(&mut self, needle: &str) -> String {
        let mut buf = [0u8; 4096];
        loop {
            while let Some(end) = self.seen.find('\n') {
                let line: String = self.seen.drain(..=end).collect();
                let line = line.trim_end().to_string();
                if line != ota_port_qemu_virt::KICK_LINE {
                    eprintln!("uart| {}", &line[..line.len().min(200)]);
                }
                if line.contains(needle) {
                    return line;
                }
            }
            let n = self.port.read(&mut buf).unwrap_or_else(|e| panic!("waiting for {needle:?}: {e}"));
            assert!(n > 0, "the UART closed while waiting for {needle:?}");
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Sends a request; returns its reply line.
    fn call(&mut self, method: &str, params: &str) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let frame = format!("{{\"id\":{id},\"method\":\"{method}\",\"src\":\"hil\",\"params\":{params}}}\n");
        self.port.write_all(frame.as_bytes()).unwrap();
        let reply = self.line_with(&format!("{{\"id\":{id},"));
        assert!(!reply.contains("\"error\""), "{method}: {reply}");
        reply
    }

    /// Pushes `bundle` with OTA.Begin, OTA.Write and OTA.End.
    fn push(&mut self, bundle: &[u8]) -> String {
        use base64::Engine as _;
        self.call("OTA.Begin", &format!("{{\"commit_timeout\":300,\"size\":{}}}", bundle.len()));
        for (i, chunk) in bundle.chunks(2048).enumerate() {
            let data = base64::engine::general_purpose::STANDARD.encode(chunk);
            self.call("OTA.Write", &format!("{{\"offset\":{},\"data\":\"{data}\"}}", i * 2048));
        }
        self.call("OTA.End", "{}")
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.qemu.0.kill();
        let _ = self.qemu.0.wait();
        if std::env::var_os("OTA_QEMU_KEEP").is_some() {
            eprintln!("kept {}", self.work.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

fn bundle(version: &str, app: &[u8], behaviour: ota_app::image::Behaviour) -> Vec<u8> {
    let mut image = app.to_vec();
    ota_app::image::write_header(&mut image, version, behaviour).unwrap();
    ota_bundle::Bundle::new("ota-qemu-fw", PLATFORM).version(version).app(image).build()
}

#[test]
fn the_boot_loader_starts_the_firmware_which_answers_sys_get_info_over_the_uart() {
    if !ready() {
        return;
    }
    let (boot, app) = images();
    println!("boot loader: {} bytes; firmware image: {} bytes", boot.len(), app.len());
    let mut board = Board::start("info", &boot, app, false);
    let jump = board.line_with("jump at mtime");
    println!("{jump}");
    board.line_with("\"event\":\"running\"");
    let reply = board.call("Sys.GetInfo", "{}");
    println!("{reply}");
    assert!(reply.contains("\"fw_version\":\"1.0.0\""), "{reply}");
    assert!(reply.contains(&format!("\"arch\":\"{PLATFORM}\"")), "{reply}");
}

#[test]
fn an_update_over_the_uart_boots_its_trial_a_crashing_one_reverts() {
    if !ready() {
        return;
    }
    use ota_app::image::Behaviour;
    let (boot, app) = images();
    let mut board = Board::start("update", &boot, app.clone(), true);
    board.line_with("\"event\":\"running\"");
    let end = board.push(&bundle("2.0.0", &app, Behaviour::Healthy));
    assert!(end.contains("Update applied"), "{end}");
    // The reboot is due in 100 ms of device time: the advance runs it, and the next boot answers.
    board.call("Board.Clock", "{\"advance_ms\":200}");
    let text = board.seen.clone();
    assert!(text.is_empty() || !text.contains("error"), "{text}");
    let info = board.call("Sys.GetInfo", "{}");
    assert!(info.contains("\"fw_version\":\"2.0.0\"") && info.contains("\"ota_slot\":1"), "{info}");
    let state = board.call("OTA.GetBootState", "{}");
    assert!(state.contains("\"is_committed\":true"), "the healthy image committed itself: {state}");

    let end = board.push(&bundle("3.0.0", &app, Behaviour::CrashesAtBoot));
    assert!(end.contains("Update applied"), "{end}");
    board.call("Board.Clock", "{\"advance_ms\":200}");
    let info = board.call("Sys.GetInfo", "{}");
    assert!(info.contains("\"fw_version\":\"2.0.0\"") && info.contains("\"ota_slot\":1"), "{info}");
}

#[test]
fn a_hanging_image_spins_until_the_watchdogs_reset_which_keeps_the_flash() {
    if !ready() {
        return;
    }
    use ota_app::image::Behaviour;
    let (boot, mut app) = images();
    ota_app::image::write_header(&mut app, "1.0.0", Behaviour::Hangs).unwrap();
    let mut board = Board::start("hang", &boot, app, true);
    board.line_with("\"event\":\"hung\"");
    // The runner's watchdog: a reset through QMP, with the flash kept.
    qmp_command(&mut board.qmp, &mut board.qmp_in, r#"{"execute":"system_reset"}"#);
    board.line_with("ota-qemu-boot: slot 0 (Committed)");
    let hung = board.line_with("\"event\":\"hung\"");
    assert!(hung.contains("\"ms\":0"), "the frozen clock kept its value across the reset: {hung}");
}

/// Sends a QMP command and waits for its return (events may come first).
fn qmp_command(qmp: &mut UnixStream, qmp_in: &mut BufReader<UnixStream>, command: &str) {
    writeln!(qmp, "{command}").unwrap();
    let mut reply = String::new();
    while !reply.contains("\"return\"") {
        reply.clear();
        qmp_in.read_line(&mut reply).unwrap();
        assert!(!reply.is_empty() && !reply.contains("\"error\""), "QMP {command}: {reply:?}");
    }
}

/// QEMU names its pty on stdout: "char device redirected to /dev/pts/N (label serial0)".
fn pty_path(qemu: &mut Qemu) -> String {
    let stdout = qemu.0.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("redirected to ").nth(1) {
            return rest.split_whitespace().next().unwrap().to_string();
        }
    }
    panic!("QEMU exited without naming its pty");
}
