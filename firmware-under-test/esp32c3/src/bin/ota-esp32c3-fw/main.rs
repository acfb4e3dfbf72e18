//! The application as an ESP32-C3 image: `ota-app` on esp-hal, started by ESP-IDF's
//! second-stage boot loader from the partition otadata names.
//!
//! Early init is `ota_app::otadata::early_start` (plan, redirect without writing, or the core's
//! boot and otadata to match); every reset the application asks for names the next slot in
//! otadata first (`ota_app::otadata::prepare_reset`). RPC in Mongoose OS framing runs on
//! USB-Serial-JTAG and on UART0, with the `@ota {json}` event lines on both. With
//! `wifi.sta.enable` and an SSID in `conf9.json`, the board joins that network as a station and
//! serves the HTTP service on port 80 and pulls (`ota_net`, as on QEMU; `wifi.rs`), printing
//! `http=IP:80` once DHCP gave it an address; otherwise the radio stays off. The RTC watchdog
//! resets a firmware that stops feeding it (a hang); a crash at boot is a real panic, whose halt
//! resets the chip.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "ota-esp32c3-fw runs on an ESP32-C3: cargo build --release -p ota-port-esp32c3 \
         --target riscv32imc-unknown-none-elf"
    );
}

#[cfg(target_os = "none")]
mod wifi;

#[cfg(target_os = "none")]
mod device {
    extern crate alloc;

    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
    use esp_bootloader_esp_idf::partitions;
    use esp_hal::rtc_cntl::{Rtc, RwdtStage};
    use esp_hal::time::{Duration, Instant};
    use esp_hal::uart::{self, Uart};
    use esp_hal::usb::usb_serial_jtag::UsbSerialJtag;
    use esp_hal::{Blocking, ram, system};
    use esp_storage::{FlashStorage, FlashStorageError};
    use ota_app::app::{App, RpcError, Settings, Start, Tick};
    use ota_app::otadata::{self, Early, EspOtadata, Otadata};
    use ota_app::service::PullRequest;
    use ota_app::web::{self, Action, AppHost};
    use ota_app::{Event, Source, Stamped};
    use ota_core::layout::Slot;
    use ota_core::updater::UpdateOptions;
    use ota_net::smoltcp::wire::Ipv4Address;
    use ota_port_esp32c3::channel::{self, Channel};
    use ota_proto::http::client::{DeviceIdentity, PullOutcome};
    use ota_proto::http::response::Response as HttpResponse;
    use ota_proto::rpc::frame;

    use super::wifi::{self, Net, Radio, Station};
    use ota_port_esp32c3::{LAYOUT, PLATFORM, WATCHDOG_MS, slot_at};

    use esp_backtrace as _;

    esp_bootloader_esp_idf::esp_app_desc!();

    /// The app descriptor: `ota_app::image`'s header, healthy, this build's version. It follows
    /// ESP-IDF's `esp_app_desc_t` in the first DROM segment (esp-hal's `rodata.x` keeps
    /// `.flash.appdesc.*` right after `.flash.appdesc`), well inside the image's first 4 KiB,
    /// where `ota_app::image::find_header` looks. The runner patches it for each scenario.
    #[unsafe(link_section = ".flash.appdesc.ota")]
    #[used]
    static APP_DESCRIPTOR: [u8; ota_app::image::HEADER_BYTES] = ota_port_esp32c3::descriptor();

    /// The heap: serde_json, the update session, LittleFS mounts; with Wi-Fi, also esp-radio's
    /// buffers and tasks and `ota_net`'s sockets (`Buffers::SMALL`: 40 KiB, 9 KiB more during a
    /// pull).
    const HEAP_BYTES: usize = 128 * 1024;
    /// More heap in the RAM the second-stage boot loader used, free once the app runs.
    const RECLAIMED_HEAP_BYTES: usize = 64_000;
    /// The most bytes read from one port per main-loop turn.
    const READ_CHUNK_BYTES: usize = 1024;
    /// Tries for one byte into the USB-Serial-JTAG FIFO before the rest of a write is dropped:
    /// with no host reading, the FIFO never drains, and the firmware must not stall on it.
    const USB_BYTE_TRIES: u32 = 10_000;

    /// esp-storage's flash as the core's `NorFlash`: `NorFlash::write` and `erase`, never the
    /// `Storage` trait's read-modify-write `write`.
    struct ChipFlash(FlashStorage<'static>);

    impl ErrorType for ChipFlash {
        type Error = FlashStorageError;
    }

    impl ReadNorFlash for ChipFlash {
        const READ_SIZE: usize = <FlashStorage<'static> as ReadNorFlash>::READ_SIZE;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashStorageError> {
            ReadNorFlash::read(&mut self.0, offset, bytes)
        }
        fn capacity(&self) -> usize {
            ReadNorFlash::capacity(&self.0)
        }
    }

    impl NorFlash for ChipFlash {
        const WRITE_SIZE: usize = <FlashStorage<'static> as NorFlash>::WRITE_SIZE;
        const ERASE_SIZE: usize = <FlashStorage<'static> as NorFlash>::ERASE_SIZE;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashStorageError> {
            ota_flash_erase(&mut self.0, from, to)
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashStorageError> {
            ota_flash_program(&mut self.0, offset, bytes)
        }
    }

    /// One NorFlash program: the runner's probe-rs cut at flash operation N puts a breakpoint
    /// here (the same symbol as the QEMU port's), so the image under test has no test hook.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub fn ota_flash_program(
        flash: &mut FlashStorage<'static>,
        offset: u32,
        bytes: &[u8],
    ) -> Result<(), FlashStorageError> {
        NorFlash::write(flash, offset, bytes)
    }

    /// One NorFlash erase of `from..to`: the other breakpoint of a cut at flash operation N.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub fn ota_flash_erase(
        flash: &mut FlashStorage<'static>,
        from: u32,
        to: u32,
    ) -> Result<(), FlashStorageError> {
        NorFlash::erase(flash, from, to)
    }

    impl ota_core::flash::RegionDigests for ChipFlash {}
    impl ota_app::Flash for ChipFlash {}

    /// The two serial ports and the watchdog.
    struct Board {
        usb: UsbSerialJtag<'static, Blocking>,
        uart: Uart<'static, Blocking>,
        rtc: Rtc<'static>,
    }

    impl Board {
        fn usb_write(&mut self, bytes: &[u8]) {
            for &byte in bytes {
                let mut tries = 0;
                while self.usb.write_byte_nb(byte).is_err() {
                    tries += 1;
                    if tries == USB_BYTE_TRIES {
                        return;
                    }
                }
            }
            let _ = self.usb.flush_tx_nb();
        }

        fn uart_write(&mut self, mut bytes: &[u8]) {
            while !bytes.is_empty() {
                match self.uart.write(bytes) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => bytes = &bytes[n..],
                }
            }
        }

        /// A console line on both ports.
        fn line(&mut self, text: &str) {
            for bytes in [text.as_bytes(), b"\r\n"] {
                self.usb_write(bytes);
                self.uart_write(bytes);
            }
        }

        fn events(&mut self, events: Vec<Stamped>) {
            for stamped in events {
                self.line(&stamped.console_line());
            }
        }
    }

    fn now_ms() -> u64 {
        Instant::now().duration_since_epoch().as_millis()
    }

    fn settings() -> Settings {
        Settings {
            platform: PLATFORM.into(),
            app_name: "ota-esp32c3-fw".into(),
            default_device_id: "esp32c3".into(),
            watchdog_ms: WATCHDOG_MS,
            ..Settings::default()
        }
    }

    /// The partition the boot loader mapped (esp-bootloader-esp-idf reads the MMU's first
    /// entry); without one, the slot otadata names, which is what the boot loader boots.
    fn booted_slot(flash: &mut ChipFlash) -> Slot {
        let mut table = [0u8; partitions::PARTITION_TABLE_MAX_LEN];
        let mapped = partitions::read_partition_table(&mut flash.0, &mut table)
            .ok()
            .and_then(|pt| pt.booted_partition().ok().flatten())
            .and_then(|entry| slot_at(entry.offset()));
        mapped.unwrap_or_else(|| EspOtadata::default().named_slot(flash).unwrap_or(Slot::S0))
    }

    #[esp_hal::main]
    fn main() -> ! {
        let p = esp_hal::init(esp_hal::Config::default());
        esp_alloc::heap_allocator!(#[ram(reclaimed)] size: RECLAIMED_HEAP_BYTES);
        esp_alloc::heap_allocator!(size: HEAP_BYTES);
        let mut rtc = Rtc::new(p.RTC_TIMER);
        rtc.rwdt.set_timeout(RwdtStage::Stage0, Duration::from_millis(WATCHDOG_MS));
        rtc.rwdt.enable();
        let usb = UsbSerialJtag::new(p.USB_DEVICE);
        let uart = match Uart::new(p.UART0, uart::Config::default()) {
            Ok(uart) => uart.with_rx(p.GPIO20).with_tx(p.GPIO21),
            Err(e) => panic!("UART0: {e:?}"),
        };
        let mut board = Board { usb, uart, rtc };
        let radio = Radio { timg0: p.TIMG0, from_cpu_intr0: p.FROM_CPU_INTR0, wifi: p.WIFI };
        let mut flash = ChipFlash(FlashStorage::new(p.FLASH));
        let booted = booted_slot(&mut flash);
        let mut otadata = EspOtadata::default();
        let mut events = Vec::new();
        let early =
            otadata::early_start(flash, &mut otadata, booted, LAYOUT, settings(), now_ms(), &mut events);
        let crashed = events.iter().any(|s| s.event == Event::Crashed);
        board.events(events);
        match early {
            Early::Redirect { to, named, .. } => {
                board.line(&alloc::format!("ota-esp32c3-fw: booted {booted}, the boot state plans {to} (otadata named: {named}); reset"));
                system::software_reset()
            }
            Early::Start(Start::Running(app)) => run(board, app, otadata, radio),
            Early::Start(Start::Reset { .. }) if crashed => {
                panic!("crash at boot, as the app descriptor says")
            }
            Early::Start(Start::Reset { .. }) => system::software_reset(),
            Early::Start(Start::Hung { .. }) => hang(),
            Early::Start(Start::Bricked { why, .. }) => bricked(board, &why),
        }
    }

    /// A hang: a real spin that never feeds the watchdog, which resets the chip.
    #[allow(clippy::empty_loop)]
    fn hang() -> ! {
        loop {}
    }

    /// Nothing boots: say why now and then, and keep the watchdog fed (a reset would not help).
    fn bricked(mut board: Board, why: &str) -> ! {
        let mut next = 0;
        loop {
            board.rtc.rwdt.feed();
            if now_ms() >= next {
                board.line(&alloc::format!("ota-esp32c3-fw: nothing boots: {why}"));
                next = now_ms() + 5_000;
            }
        }
    }

    /// The network, when the station is on.
    struct Network {
        station: Station,
        net: Net,
        /// The address last printed (`http=IP:80`).
        announced: Option<Ipv4Address>,
    }

    /// Starts Wi-Fi when `conf9.json` enables the station and names a network.
    fn network(board: &mut Board, app: &mut App<ChipFlash>, radio: Radio) -> Option<Network> {
        let sta = app.config().wifi_sta;
        let Some((ssid, pass)) = sta.network() else {
            board.line("ota-esp32c3-fw: wifi.sta is off or names no network: no Wi-Fi, no HTTP, no pulls");
            return None;
        };
        match wifi::start(radio, ssid, pass, now_ms) {
            Ok((station, net)) => Some(Network { station, net, announced: None }),
            Err(why) => {
                board.line(&alloc::format!("ota-esp32c3-fw: no Wi-Fi ({why}): no HTTP, no pulls"));
                None
            }
        }
    }

    /// The application as `ota_app::web` drives it.
    struct Host<'a>(&'a mut App<ChipFlash>);

    impl AppHost for Host<'_> {
        type Flash = ChipFlash;
        fn with_app<T>(&mut self, f: impl FnOnce(&mut App<ChipFlash>, u64) -> T) -> Result<T, RpcError> {
            Ok(f(self.0, now_ms()))
        }
    }

    /// The main loop: read both ports, serve the network, answer, run what is due, feed the
    /// watchdog.
    fn run(mut board: Board, mut app: Box<App<ChipFlash>>, mut otadata: EspOtadata, radio: Radio) -> ! {
        let (mut usb_channel, mut uart_channel) = (Channel::default(), Channel::default());
        let mut network = network(&mut board, &mut app, radio);
        let mut buf = [0u8; READ_CHUNK_BYTES];
        // What is due at once (a commit timeout of 0) runs at the first turn.
        let mut due_ms = Some(0);
        loop {
            board.rtc.rwdt.feed();
            let mut handled = false;
            let mut n = 0;
            while n < READ_CHUNK_BYTES {
                let Ok(byte) = board.usb.read_byte() else { break };
                buf[n] = byte;
                n += 1;
            }
            if n > 0 {
                let reply = feed(&mut usb_channel, &mut board, &mut app, network.as_mut(), &buf[..n]);
                board.usb_write(&reply);
                handled = true;
            }
            let n = board.uart.read_buffered(&mut buf).unwrap_or(0);
            if n > 0 {
                let reply = feed(&mut uart_channel, &mut board, &mut app, network.as_mut(), &buf[..n]);
                board.uart_write(&reply);
                handled = true;
            }
            if let Some(network) = network.as_mut() {
                handled |= serve(&mut board, &mut app, network);
            }
            board.events(app.take_events());
            let now = now_ms();
            if handled || due_ms.is_some_and(|due| now >= due) {
                tick(&mut board, &mut app, &mut otadata, network.as_mut().map(|n| &mut n.net), now);
                due_ms = app.next_due_ms();
            }
        }
    }

    /// A serial port's bytes into its channel, the pulls its methods ask for run over Wi-Fi.
    fn feed(
        channel: &mut Channel,
        board: &mut Board,
        app: &mut App<ChipFlash>,
        network: Option<&mut Network>,
        bytes: &[u8],
    ) -> Vec<u8> {
        match network {
            Some(network) => {
                let mut pull =
                    |app: &mut App<ChipFlash>, r: &PullRequest| pull(board, app, &mut network.net, r);
                channel.feed_pulling(app, bytes, now_ms(), Some(&mut pull))
            }
            None => channel.feed(app, bytes, now_ms()),
        }
    }

    /// One turn of the network: the join's news, the address once DHCP gives one, the HTTP
    /// connections and the requests they hand back. Whether anything was handled.
    fn serve(board: &mut Board, app: &mut App<ChipFlash>, network: &mut Network) -> bool {
        let (lines, left) = network.station.poll();
        for line in lines {
            board.line(&alloc::format!("ota-esp32c3-fw: {line}"));
        }
        if left {
            network.net.renew_address();
        }
        let pending = network.net.poll(&mut Host(app));
        let address = network.net.ipv4_address();
        if address != network.announced {
            network.announced = address;
            match address {
                Some(ip) => board.line(&alloc::format!(
                    "ota-esp32c3-fw: wifi: address {ip} (DHCP), http={ip}:{}",
                    ota_net::HTTP_PORT
                )),
                None => board.line("ota-esp32c3-fw: wifi: no address (the DHCP lease ended)"),
            }
        }
        let handled = !pending.is_empty() || network.net.busy();
        for ota_net::Pending { slot, action } in pending {
            let response = answer(board, app, &mut network.net, action);
            network.net.respond(slot, response);
        }
        handled
    }

    /// The answer to an HTTP request that needs more than the application: a pull, an RPC frame
    /// or call.
    fn answer(board: &mut Board, app: &mut App<ChipFlash>, net: &mut Net, action: Action) -> HttpResponse {
        let board = RefCell::new(board);
        let mut pull = |app: &mut App<ChipFlash>, r: &PullRequest| pull(&mut board.borrow_mut(), app, net, r);
        match action {
            Action::Respond(response) => response,
            Action::Pull(request) => web::pull_response(pull(app, &request)),
            Action::Frame(body) => match channel::frame_reply(app, &body, now_ms(), Some(&mut pull)) {
                Ok(reply) => web::frame_response(Ok(reply)),
                Err(error) => {
                    let id = app.config().device_id;
                    web::frame_response(Err(frame::not_a_frame_json(&error, &id)))
                }
            },
            Action::Call { method, params } => {
                web::call_response(channel::call(app, &method, &params, now_ms(), Some(&mut pull)))
            }
        }
    }

    /// A pull (§6.2) over Wi-Fi: the bundle streams from `request.url` into the updater as it
    /// arrives, as on the QEMU port. The watchdog is fed at every wait.
    fn pull(
        board: &mut Board,
        app: &mut App<ChipFlash>,
        net: &mut Net,
        request: &PullRequest,
    ) -> Result<&'static str, RpcError> {
        let options = UpdateOptions {
            commit_timeout_s: request.commit_timeout_s,
            ignore_same_version: request.ignore_same_version,
        };
        let begun = app.update_begin(Source::Pull, options, None, None, now_ms());
        board.events(app.take_events());
        let id = begun?;
        let (fw_version, fw_id) = app.version();
        let config = app.config();
        let identity = DeviceIdentity {
            device_id: Some(config.device_id.clone()),
            mac: None,
            app: app.settings().app_name.clone(),
            platform: app.settings().platform.clone(),
            fw_version,
            fw_id,
        };
        let fetched = {
            let board = RefCell::new(&mut *board);
            let app = &mut *app;
            let on_body = |piece: &[u8]| -> Result<(), alloc::string::String> {
                let written = app.update_data(id, piece, now_ms()).map_err(|e| e.message);
                board.borrow_mut().events(app.take_events());
                written
            };
            let wait = |delay: Option<ota_net::smoltcp::time::Duration>| {
                board.borrow_mut().rtc.rwdt.feed();
                let most = delay.map_or(wifi::PULL_WAIT_MS, |d| d.total_millis().min(wifi::PULL_WAIT_MS));
                let until = now_ms() + most;
                while now_ms() < until {}
            };
            net.get(&identity, &config.update_extra_http_headers, &request.url, on_body, wait)
        };
        let now = now_ms();
        let result = match fetched {
            Ok(PullOutcome::NotModified) => {
                app.update_not_modified(id, now);
                Ok("Not Modified")
            }
            Ok(PullOutcome::Done { .. }) => app.update_end(id, now).map(|f| f.message()),
            Err(e) => {
                app.update_abort(id, &alloc::format!("pull failed: {e}"), now);
                Err(RpcError::new(e.code, e.message))
            }
        };
        board.events(app.take_events());
        result
    }

    /// Runs what is due at `now`; a reboot it asks for names the next slot in otadata first, and
    /// a poll (`update.url`, `update.interval`) pulls over Wi-Fi, its outcome in the events.
    fn tick(
        board: &mut Board,
        app: &mut App<ChipFlash>,
        otadata: &mut EspOtadata,
        net: Option<&mut Net>,
        now: u64,
    ) {
        let tick = app.tick(now);
        board.events(app.take_events());
        match tick {
            Tick::Reboot { why } => {
                if let Err(e) = otadata::prepare_reset(app.flash_mut(), otadata, &LAYOUT, 4096) {
                    board.line(&alloc::format!("otadata not updated ({e}); the next boot redirects"));
                }
                board.line(&alloc::format!("reboot: {why}"));
                system::software_reset()
            }
            Tick::Pull(request) => {
                if let Some(net) = net {
                    let _ = pull(board, app, net, &request);
                }
            }
            Tick::Nothing => {}
        }
    }

    /// esp-backtrace prints the panic, then halts here: a crash resets the chip.
    #[unsafe(no_mangle)]
    extern "Rust" fn custom_halt() -> ! {
        system::software_reset()
    }
}
