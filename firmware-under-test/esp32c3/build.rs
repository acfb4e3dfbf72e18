//! On the ESP32-C3 the binary links with esp-hal's `linkall.x`. Only for that build: the host
//! build (a stub) and the QEMU port's builds need no script from here.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo::rustc-link-arg-bins=-Tlinkall.x");
    }
}
