//! The application as an ESP32-C3 image: `ota-app` on esp-hal.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "ota-esp32c3-fw runs on an ESP32-C3: cargo build --release -p ota-port-esp32c3 \
         --target riscv32imc-unknown-none-elf"
    );
}

#[cfg(target_os = "none")]
mod device {
    use esp_backtrace as _;

    esp_bootloader_esp_idf::esp_app_desc!();

    /// The app descriptor: `ota_app::image`'s header, healthy, this build's version. It follows
    /// ESP-IDF's `esp_app_desc_t` in the first DROM segment (esp-hal's `rodata.x` keeps
    /// `.flash.appdesc.*` right after `.flash.appdesc`), well inside the image's first 4 KiB,
    /// where `ota_app::image::find_header` looks. The runner patches it for each scenario.
    #[unsafe(link_section = ".flash.appdesc.ota")]
    #[used]
    static APP_DESCRIPTOR: [u8; ota_app::image::HEADER_BYTES] = ota_port_esp32c3::descriptor();

    #[esp_hal::main]
    fn main() -> ! {
        let _peripherals = esp_hal::init(esp_hal::Config::default());
        esp_alloc::heap_allocator!(size: 96 * 1024);
        esp_println::println!("ota-esp32c3-fw {}", env!("CARGO_PKG_VERSION"));
        loop {}
    }
}
