//! On the bare-metal target each binary links with its own script from this directory:
//! `boot.x` (the boot loader: a reset stub in flash, the rest copied to RAM) and `fw.x` (the
//! application: linked to run from RAM, its app descriptor first). The host build needs neither.

fn main() {
    println!("cargo::rerun-if-changed=boot.x");
    println!("cargo::rerun-if-changed=fw.x");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo::rustc-link-search={dir}");
        println!("cargo::rustc-link-arg-bin=ota-qemu-boot=-Tboot.x");
        println!("cargo::rustc-link-arg-bin=ota-qemu-fw=-Tfw.x");
    }
}
