//! The QMP and gdbstub clients and the ELF reader against a real QEMU running a bare-metal ELF:
//! the link check built for riscv32imc, loaded with `-device loader` and held at reset with `-S`.
//!
//! Needs `qemu-system-riscv32` (Debian's qemu-system-misc) and the riscv32imc target. Without
//! them the tests print why and pass, unless `HIL_REQUIRE_QEMU=1` (CI sets it), which makes a
//! missing QEMU a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ota_hil::qemu::elf::Elf;
use ota_hil::qemu::gdb::{Gdb, GdbError, SIGTRAP, Stop};
use ota_hil::qemu::qmp::Qmp;

const QEMU: &str = "qemu-system-riscv32";
const TIMEOUT: Duration = Duration::from_secs(20);
/// RV32 register numbers as gdb numbers them.
const PC: u32 = 32;
/// The `virt` machine's mtime register.
const MTIME: u32 = 0x0200_bff8;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bare-metal link check, built now; `None` (with the reason printed) when this machine
/// cannot run the test and CI did not ask for it.
fn link_check_elf() -> Option<PathBuf> {
    let required = std::env::var_os("HIL_REQUIRE_QEMU").is_some_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "HIL_REQUIRE_QEMU=1 but {why}");
        eprintln!("qemu_protocols: skipped: {why} (set HIL_REQUIRE_QEMU=1 to make this a failure)");
        None
    };
    if Command::new(QEMU).arg("--version").output().is_err() {
        return skip(format!("no {QEMU} on PATH (apt-get install qemu-system-misc)"));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let elf = target.join("riscv32imc-unknown-none-elf/release/ota-link-check");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "-q", "--release", "-p", "ota-link-check", "--target", "riscv32imc-unknown-none-elf"])
        .current_dir(workspace())
        .status();
    if !matches!(built, Ok(s) if s.success()) || !elf.is_file() {
        return skip(format!("the link check did not build for riscv32imc ({built:?})"));
    }
    Some(elf)
}

struct Qemu {
    child: Child,
    dir: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(elf: &Path, name: &str) -> Qemu {
    let dir = std::env::temp_dir().join(format!("hil-qemu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new(QEMU)
        .args([
            "-machine", "virt", "-display", "none", "-bios", "none", "-monitor", "none", "-serial", "null",
        ])
        .args(["-icount", "shift=0,sleep=off", "-S"])
        .arg("-device")
        .arg(format!("loader,file={},cpu-num=0", elf.display()))
        .arg("-gdb")
        .arg(format!("unix:{},server=on,wait=off", dir.join("gdb").display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", dir.join("qmp").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Qemu { child, dir }
}

#[test]
fn gdb_and_qmp_drive_a_bare_metal_elf_on_qemu() {
    let Some(path) = link_check_elf() else { return };
    let elf = Elf::parse(&std::fs::read(&path).unwrap()).unwrap();
    let main = elf.symbol("main").expect("the link check has a main");
    let flat = elf.flatten(16 << 20).unwrap();
    let qemu = start(&path, "protocols");
    let mut qmp = Qmp::connect(&qemu.dir.join("qmp"), TIMEOUT).unwrap();
    let mut gdb = Gdb::connect(&qemu.dir.join("gdb"), TIMEOUT).unwrap();

    // Held at reset (-S), at the ELF's entry, with the flattened bytes in memory.
    assert!(matches!(gdb.stop_reason().unwrap(), Stop::Signal { .. }));
    assert_eq!(gdb.register(PC).unwrap(), elf.entry);
    let at = (elf.entry - flat.base) as usize;
    assert_eq!(gdb.read_memory(elf.entry, 64).unwrap(), flat.bytes[at..at + 64]);
    assert_eq!(qmp.status().unwrap(), "prelaunch");

    // A breakpoint, the CPUs started through QMP, the stop reported to gdb.
    gdb.set_breakpoint(main).unwrap();
    qmp.cont().unwrap();
    let stop = gdb.await_stop(TIMEOUT).unwrap();
    assert!(matches!(stop, Stop::Signal { signal: SIGTRAP, .. }), "{stop:?}");
    assert_eq!(gdb.register(PC).unwrap(), main);
    assert_eq!(gdb.registers().unwrap()[PC as usize], main);
    let ran = gdb.read_u64(MTIME).unwrap();
    assert!(ran > 0, "with -icount, mtime counts the instructions run to main");

    // Continue through gdb, interrupt, reset through QMP.
    gdb.clear_breakpoint(main).unwrap();
    gdb.resume().unwrap();
    assert!(matches!(gdb.interrupt().unwrap(), Stop::Signal { .. }));
    qmp.system_reset().unwrap();
    qmp.await_event("RESET", TIMEOUT).unwrap();

    // SIGKILL, a power cut: both lines close.
    drop(qemu);
    assert!(matches!(gdb.read_u64(MTIME), Err(GdbError::Closed { .. })));
    assert!(qmp.status().is_err());
}

/// Instruction counts are deterministic under `-icount shift=0`: two runs to the same
/// breakpoint read the same mtime.
#[test]
fn icount_makes_the_run_to_a_breakpoint_take_the_same_time_twice() {
    let Some(path) = link_check_elf() else { return };
    let elf = Elf::parse(&std::fs::read(&path).unwrap()).unwrap();
    let main = elf.symbol("main").expect("the link check has a main");
    let run = || {
        let qemu = start(&path, "icount");
        let mut qmp = Qmp::connect(&qemu.dir.join("qmp"), TIMEOUT).unwrap();
        let mut gdb = Gdb::connect(&qemu.dir.join("gdb"), TIMEOUT).unwrap();
        gdb.set_breakpoint(main).unwrap();
        qmp.cont().unwrap();
        gdb.await_stop(TIMEOUT).unwrap();
        gdb.read_u64(MTIME).unwrap()
    };
    assert_eq!(run(), run());
}
