//! The board's devices on the target: the flash through its MMIO window, the 16550 UART, mtime,
//! the PLIC (for the UART interrupt that ends a `wfi`), `sifive_test`, and the two flash entry
//! points a debugger breaks on.

use core::fmt;
use core::ptr::{read_volatile, write_volatile};

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};

use crate::cfi::{self, Bus, Cfi, CfiError};

/// The flash's MMIO window.
pub struct Mmio;

impl Bus for Mmio {
    fn read32(&mut self, offset: u32) -> u32 {
        // SAFETY: the window is 32 MiB of device memory at 0x2000_0000 and callers stay in it.
        unsafe { read_volatile((cfi::BASE_ADDRESS + offset as usize) as *const u32) }
    }

    fn write32(&mut self, offset: u32, value: u32) {
        // SAFETY: as for `read32`.
        unsafe { write_volatile((cfi::BASE_ADDRESS + offset as usize) as *mut u32, value) }
    }
}

/// The flash as the core uses it: every mutating operation enters through
/// [`ota_flash_program`] or [`ota_flash_erase`], once per operation the core counts.
pub struct Flash;

impl ErrorType for Flash {
    type Error = CfiError;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), CfiError> {
        Cfi::new(Mmio).read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        cfi::SIZE_BYTES as usize
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = cfi::WRITE_BYTES as usize;
    const ERASE_SIZE: usize = cfi::SECTOR_BYTES as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), CfiError> {
        ota_flash_erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), CfiError> {
        ota_flash_program(offset, bytes)
    }
}

impl ota_core::flash::RegionDigests for Flash {}

/// One NorFlash program: a debugger's breakpoint here counts program operations.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn ota_flash_program(offset: u32, data: &[u8]) -> Result<(), CfiError> {
    Cfi::new(Mmio).program(offset, data)
}

/// One NorFlash erase of `from..to`: a debugger's breakpoint here counts erase operations.
#[unsafe(no_mangle)]
#[inline(never)]
pub fn ota_flash_erase(from: u32, to: u32) -> Result<(), CfiError> {
    Cfi::new(Mmio).erase(from, to)
}

/// A named phase starts (`ota_app::Phase as u32` in `a0`): a debugger breaks here to cut the
/// power at the phase's first flash operation.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn ota_phase_marker(phase: u32) {
    // Keeps the call from being optimised away: the argument must reach a0.
    core::hint::black_box(phase);
}

/// The 16550 UART at 0x1000_0000.
pub mod uart {
    use super::*;

    const BASE: usize = 0x1000_0000;
    const RBR_THR: usize = 0;
    const IER: usize = 1;
    const FCR: usize = 2;
    const LCR: usize = 3;
    const LSR: usize = 5;
    const LSR_DATA_READY: u8 = 0x01;
    const LSR_THR_EMPTY: u8 = 0x20;
    /// The UART's interrupt source on the PLIC.
    pub const IRQ: u32 = 10;

    fn reg(offset: usize) -> *mut u8 {
        (BASE + offset) as *mut u8
    }

    /// The 16-byte FIFOs on, interrupting at 14 bytes or after the receive timeout (QEMU
    /// hands the guest at most the trigger level at a time, so a trigger of 1 makes every byte
    /// a wake of its own); the fastest baud rate, so that the timeout (four characters) is
    /// short; interrupts on received data (a `wfi` ends when bytes arrive).
    pub fn enable_rx_interrupt() {
        // SAFETY: UART registers: LCR.DLAB to reach the divisor latch, divisor 1, LCR 8N1;
        // FCR = FIFO on, both cleared, trigger at 14 bytes; IER = RX data and its timeout.
        unsafe {
            write_volatile(reg(LCR), 0x83);
            write_volatile(reg(RBR_THR), 1);
            write_volatile(reg(IER), 0);
            write_volatile(reg(LCR), 0x03);
            write_volatile(reg(FCR), 0xc7);
            write_volatile(reg(IER), 0x01);
        }
    }

    pub fn write(bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: UART registers.
            unsafe {
                while read_volatile(reg(LSR)) & LSR_THR_EMPTY == 0 {}
                write_volatile(reg(RBR_THR), b);
            }
        }
    }

    pub fn read() -> Option<u8> {
        // SAFETY: UART registers.
        unsafe { (read_volatile(reg(LSR)) & LSR_DATA_READY != 0).then(|| read_volatile(reg(RBR_THR))) }
    }

    /// The UART as a `core::fmt::Write`.
    pub struct Writer;

    impl fmt::Write for Writer {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            write(s.as_bytes());
            Ok(())
        }
    }
}

/// mtime and hart 0's mtimecmp (the ACLINT of `virt`).
pub mod timer {
    use super::*;

    const MTIME: usize = 0x0200_bff8;
    const MTIMECMP: usize = 0x0200_4000;

    pub fn ticks() -> u64 {
        // SAFETY: the mtime registers; read high, low, high until the high word holds still.
        unsafe {
            loop {
                let hi = read_volatile((MTIME + 4) as *const u32);
                let lo = read_volatile(MTIME as *const u32);
                if read_volatile((MTIME + 4) as *const u32) == hi {
                    return (hi as u64) << 32 | lo as u64;
                }
            }
        }
    }

    /// The timer interrupt goes pending at `ticks` (`u64::MAX`: never).
    pub fn wake_at(ticks: u64) {
        // SAFETY: hart 0's mtimecmp; the high word first at its maximum, so no early match.
        unsafe {
            write_volatile((MTIMECMP + 4) as *mut u32, u32::MAX);
            write_volatile(MTIMECMP as *mut u32, ticks as u32);
            write_volatile((MTIMECMP + 4) as *mut u32, (ticks >> 32) as u32);
        }
    }
}

/// The PLIC: the UART's interrupt to hart 0's machine-mode context.
pub mod plic {
    use super::*;

    const BASE: usize = 0x0c00_0000;
    const ENABLE_CONTEXT0: usize = BASE + 0x2000;
    const THRESHOLD_CONTEXT0: usize = BASE + 0x20_0000;
    const CLAIM_CONTEXT0: usize = BASE + 0x20_0004;

    pub fn enable(irq: u32) {
        // SAFETY: PLIC registers of context 0 (hart 0, M mode).
        unsafe {
            write_volatile((BASE + 4 * irq as usize) as *mut u32, 1);
            let word = (ENABLE_CONTEXT0 + 4 * (irq as usize / 32)) as *mut u32;
            write_volatile(word, read_volatile(word) | 1 << (irq % 32));
            write_volatile(THRESHOLD_CONTEXT0 as *mut u32, 0);
        }
    }

    /// Claims and completes whatever is pending, so the next interrupt can end a `wfi`.
    pub fn acknowledge() {
        // SAFETY: PLIC registers of context 0.
        unsafe {
            loop {
                let irq = read_volatile(CLAIM_CONTEXT0 as *const u32);
                if irq == 0 {
                    break;
                }
                write_volatile(CLAIM_CONTEXT0 as *mut u32, irq);
            }
        }
    }
}

/// Lets machine external and timer interrupts end a `wfi`, without taking them: `mstatus.MIE`
/// stays clear, so no handler runs; the main loop looks at the devices after every wake.
pub fn wake_on_interrupts() {
    // SAFETY: sets mie.MEIE (bit 11) and mie.MTIE (bit 7); interrupts stay globally off.
    unsafe { core::arch::asm!("csrs mie, {0}", in(reg) (1u32 << 11) | (1 << 7)) };
}

pub fn wait_for_interrupt() {
    // SAFETY: `wfi` only waits.
    unsafe { core::arch::asm!("wfi") };
}

/// Resets the board through `sifive_test` (the flash is kept, RAM too).
pub fn reboot() -> ! {
    // SAFETY: sifive_test's register; 0x7777 asks QEMU for a reset.
    unsafe { write_volatile(0x0010_0000 as *mut u32, 0x7777) };
    loop {
        wait_for_interrupt();
    }
}

/// A word in RAM at a fixed address (the clock's block, the loader word).
///
/// # Safety
/// `address` is RAM that nothing else uses as anything but a `T`.
pub unsafe fn fixed<T>(address: usize) -> &'static mut T {
    // SAFETY: the caller's promise.
    unsafe { &mut *(address as *mut T) }
}

/// The trap vector both binaries install: any trap (an illegal instruction, a fault) prints its
/// cause and resets the board, as a crash on a device does.
#[unsafe(no_mangle)]
extern "C" fn ota_trap(mcause: u32, mepc: u32, mtval: u32) -> ! {
    use core::fmt::Write;
    let _ =
        write!(uart::Writer, "\r\ntrap: mcause={mcause:#x} mepc={mepc:#010x} mtval={mtval:#x}; reset\r\n");
    reboot()
}

core::arch::global_asm!(
    ".section .text.ota_trap_entry, \"ax\"",
    ".balign 4",
    ".global ota_trap_entry",
    "ota_trap_entry:",
    "csrr a0, mcause",
    "csrr a1, mepc",
    "csrr a2, mtval",
    "j ota_trap",
);

/// Points `mtvec` at [`ota_trap`]'s entry.
pub fn install_trap_handler() {
    unsafe extern "C" {
        fn ota_trap_entry();
    }
    // SAFETY: ota_trap_entry is 4-byte aligned code (direct mode).
    unsafe { core::arch::asm!("csrw mtvec, {0}", in(reg) ota_trap_entry as *const () as usize) };
}
