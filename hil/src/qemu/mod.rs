//! What the runner needs to drive QEMU: its machine protocol ([`qmp`]), its gdbstub ([`gdb`])
//! and the ELF files it runs ([`elf`]). The `qemu` board (`board::qemu`) is built on these.

pub mod elf;
pub mod gdb;
pub mod qmp;
