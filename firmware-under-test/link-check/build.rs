//! On the bare-metal target, links with riscv-rt's `link.x`, which includes `memory.x` from this
//! directory. The host build is a plain program and needs neither.

fn main() {
    println!("cargo::rerun-if-changed=memory.x");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo::rustc-link-search={dir}");
        println!("cargo::rustc-link-arg-bins=-Tlink.x");
    }
}
