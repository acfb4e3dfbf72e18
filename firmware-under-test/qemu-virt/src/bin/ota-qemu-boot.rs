//! The boot loader: no_std, no allocator, and thin. At reset QEMU runs it from the start of
//! flash; its reset stub copies the rest to RAM (the flash reads status, not code, while the
//! driver programs it), then it runs the core's boot decision (which writes the trial record),
//! copies the chosen image to RAM, checks the copy against the SHA-256 the boot state records,
//! and jumps to its entry point with the outcome in `a0`–`a3` (`handoff`). When nothing
//! verifies it says why on the UART and stops: it never jumps into an image that did not verify.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "ota-qemu-boot runs on QEMU's riscv32 virt board: cargo build --release -p ota-port-qemu-virt \
         --target riscv32imc-unknown-none-elf --bins"
    );
}

#[cfg(target_os = "none")]
mod device {
    use core::fmt::Write;

    use ota_core::boot::{self, BootOutcome};
    use ota_core::layout::{Layout, Region};
    use ota_port_qemu_virt::clock::{self, Clock};
    use ota_port_qemu_virt::handoff::HandOff;
    use ota_port_qemu_virt::hw::{self, Flash, timer, uart};
    use ota_port_qemu_virt::{FW_ENTRY_ADDRESS, FW_LOAD_ADDRESS, FW_MAX_BYTES, cfi, console};
    use sha2::{Digest, Sha256};

    /// `ota_app::Phase::Boot as u32`.
    const PHASE_BOOT: u32 = 2;

    // The reset stub: the only code that runs from flash.
    core::arch::global_asm!(
        ".section .reset, \"ax\"",
        ".global _reset",
        "_reset:",
        "csrw mie, zero",
        "la t0, _ram_image_load",
        "la t1, _ram_image_start",
        "la t2, _ram_image_end",
        "1: bgeu t1, t2, 2f",
        "lw t3, 0(t0)",
        "sw t3, 0(t1)",
        "addi t0, t0, 4",
        "addi t1, t1, 4",
        "j 1b",
        "2: la t1, _bss_start",
        "la t2, _bss_end",
        "3: bgeu t1, t2, 4f",
        "sw zero, 0(t1)",
        "addi t1, t1, 4",
        "j 3b",
        "4: la sp, _stack_top",
        "la t0, ota_boot_main",
        "jr t0",
    );

    /// The ESP32-C3 map (`ota_app::partitions`, repeated here because that crate needs an
    /// allocator; a host test checks the two agree).
    const LAYOUT: Layout = ota_port_qemu_virt::LAYOUT;

    #[unsafe(no_mangle)]
    extern "C" fn ota_boot_main() -> ! {
        hw::install_trap_handler();
        // SAFETY: the clock's block and the loader word are RAM that no section uses.
        let clock: &mut Clock = unsafe { hw::fixed(clock::BLOCK_ADDRESS) };
        // SAFETY: as above; the word is only read.
        let loader_word = unsafe { core::ptr::read_volatile(clock::LOADER_WORD_ADDRESS as *const u64) };
        clock.power_on(loader_word, timer::ticks());
        let out = &mut uart::Writer;
        let _ = write!(out, "\r\nota-qemu-boot {}\r\n", env!("CARGO_PKG_VERSION"));
        let _ = console::phase_boot(out, clock.now_ms(timer::ticks()));
        hw::ota_phase_marker(PHASE_BOOT);
        let mut buf = [0u8; 4096];
        let outcome = boot::boot(&mut Flash, &LAYOUT, &mut buf);
        let ms = clock.now_ms(timer::ticks());
        let (slot, reason, state, first_boot, merge_from) = match outcome {
            Err(e) => {
                let _ = write!(out, "ota-qemu-boot: flash error: {e}\r\n");
                stop(out, ms, "the boot loader could not read the flash")
            }
            Ok(BootOutcome::NotProvisioned) => stop(out, ms, "no boot state: never provisioned"),
            Ok(BootOutcome::NoBootableImage) => stop(out, ms, "no slot holds an image that verifies"),
            Ok(BootOutcome::Boot { slot, reason, state, first_boot, merge_from }) => {
                (slot, reason, state.record.state, first_boot, merge_from)
            }
        };
        let info = state.slot(slot);
        let len = info.app_len_bytes;
        if !(FW_ENTRY_ADDRESS - FW_LOAD_ADDRESS..=FW_MAX_BYTES).contains(&len) {
            let _ = write!(out, "ota-qemu-boot: the image in {slot} is {len} bytes\r\n");
            stop(out, ms, "the chosen image does not fit the application's RAM");
        }
        let app: Region = LAYOUT.app(slot);
        // SAFETY: the image lies inside the app slot in flash (the core checked its length
        // against the slot), the flash is in read-array mode after every driver command, and
        // the destination is the application's RAM, which nothing of the boot loader uses.
        let copy = unsafe {
            let from = (cfi::BASE_ADDRESS + app.offset as usize) as *const u8;
            let to = FW_LOAD_ADDRESS as usize as *mut u8;
            core::ptr::copy_nonoverlapping(from, to, len as usize);
            core::slice::from_raw_parts(to, len as usize)
        };
        if Sha256::digest(copy)[..] != info.app_sha256 {
            stop(out, ms, "the image copied to RAM does not match its SHA-256");
        }
        let handoff = HandOff { slot, reason: reason.into(), first_boot, merge_from };
        let [a0, a1, a2] = handoff.encode();
        let ticks = timer::ticks();
        let _ = write!(out, "ota-qemu-boot: {slot} ({reason:?}), {len} bytes, jump at mtime {ticks}\r\n");
        // SAFETY: the image at FW_LOAD_ADDRESS was just copied and matches the SHA-256 the boot
        // state records for the slot the core chose and verified; its entry point is at +0x100
        // (the runner refuses an ELF whose entry is elsewhere).
        unsafe { jump(FW_ENTRY_ADDRESS, [a0, a1, a2, ticks as u32]) }
    }

    /// Starts the application.
    ///
    /// # Safety
    /// `entry` is the entry point of an image in RAM that verified; nothing of the boot loader
    /// runs afterwards.
    unsafe fn jump(entry: u32, regs: [u32; 4]) -> ! {
        // SAFETY: the caller's promise; `fence.i` makes the copied code visible to fetches.
        unsafe {
            core::arch::asm!(
                "fence.i",
                "jr {entry}",
                entry = in(reg) entry,
                in("a0") regs[0],
                in("a1") regs[1],
                in("a2") regs[2],
                in("a3") regs[3],
                options(noreturn),
            )
        }
    }

    /// Says why nothing boots, as a line and as the `bricked` event, and stops.
    fn stop(out: &mut uart::Writer, ms: u64, why: &str) -> ! {
        let _ = write!(out, "ota-qemu-boot: nothing boots: {why}\r\n");
        let _ = console::bricked(out, ms, why);
        loop {
            hw::wait_for_interrupt();
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        let _ = write!(uart::Writer, "ota-qemu-boot: panic: {info}\r\n");
        loop {
            hw::wait_for_interrupt();
        }
    }
}
