//! The application as a real firmware image: `ota-app` on this board's devices. Linked to run
//! from RAM (`fw.x`), its app descriptor first and its entry point at +0x100; the boot loader
//! copies it there and hands over the boot outcome (`handoff`), so it never decides again.
//!
//! One UART carries both the console (`@ota {json}` event lines, the `@kick` line of every
//! main-loop turn) and RPC in Mongoose OS's framing, as the virtual board's pty does, with the
//! same `Board.Clock` rig method. With a virtio network device, the same application also
//! answers HTTP (`ota_app::web`, over `ota_net`'s smoltcp on the virtio device) and pulls bundles
//! over it. The main loop sleeps in `wfi` until a byte or a frame arrives or, with the clock
//! running, until the application's next deadline.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "ota-qemu-fw runs on QEMU's riscv32 virt board: cargo build --release -p ota-port-qemu-virt \
         --target riscv32imc-unknown-none-elf --bins"
    );
}

#[cfg(target_os = "none")]
mod net;

#[cfg(target_os = "none")]
mod device {
    extern crate alloc;

    use alloc::boxed::Box;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::cell::Cell;
    use core::fmt::Write;

    use super::net::{self, Net};
    use embedded_alloc::LlffHeap;
    use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
    use ota_app::app::{App, RpcError, Settings, Start, Tick};
    use ota_app::service::{self, PullRequest, Reply};
    use ota_app::web::{self, Action, AppHost};
    use ota_app::{Booted, Event, Phase, Source, Stamped};
    use ota_core::updater::UpdateOptions;
    use ota_port_qemu_virt::cfi::CfiError;
    use ota_port_qemu_virt::clock::{self, Clock};
    use ota_port_qemu_virt::handoff::{HandOff, Reason};
    use ota_port_qemu_virt::hw::{self, plic, timer, uart};
    use ota_port_qemu_virt::{KICK_LINE, LAYOUT, PLATFORM};
    use ota_proto::http::client::{DeviceIdentity, PullOutcome};
    use ota_proto::http::response::Response as HttpResponse;
    use ota_proto::rpc::frame::{self, FrameError, Request, Response};
    use ota_proto::rpc::uart::{DEFAULT_MAX_FRAME_BYTES, Decoder, Encoder, Item, Style};
    use serde_json::{Value, json};

    use riscv as _;

    /// The app descriptor: `ota_app::image`'s header, healthy, this build's version. The
    /// runner's bundle tool patches it (`ota_app::image::write_header`) for each scenario.
    #[unsafe(link_section = ".app_desc")]
    #[used]
    static APP_DESCRIPTOR: [u8; ota_app::image::HEADER_BYTES] = descriptor();

    const fn descriptor() -> [u8; ota_app::image::HEADER_BYTES] {
        let mut d = [0u8; ota_app::image::HEADER_BYTES];
        let mut i = 0;
        while i < 8 {
            d[i] = ota_app::image::MAGIC[i];
            i += 1;
        }
        d[8] = 1;
        let version = env!("CARGO_PKG_VERSION").as_bytes();
        let mut i = 0;
        while i < version.len() && i < 24 {
            d[16 + i] = version[i];
            i += 1;
        }
        d
    }

    /// The heap: serde_json, the update session, LittleFS mounts.
    const HEAP_BYTES: usize = 8 * 1024 * 1024;
    /// The longest the main loop sleeps without a kick: 1 s of mtime.
    const KICK_PERIOD_TICKS: u64 = 1000 * clock::TICKS_PER_MS;
    /// Kicks are at least this far apart (10 ms of mtime), so that a stream of RPC bytes does
    /// not turn into a stream of kick lines.
    const KICK_SPACING_TICKS: u64 = 10 * clock::TICKS_PER_MS;
    /// Rounds of one `advance_ms`, as on the virtual board.
    const ADVANCE_ROUNDS_MAX: u32 = 1024;
    /// An `advance_ms` that a reboot interrupted, kept across the reset: the page below the
    /// clock's block.
    const PENDING_ADDRESS: usize = clock::BLOCK_ADDRESS - 0x1000;
    const PENDING_MAGIC: u32 = 0xadd5_0001;
    const PENDING_JSON_MAX: usize = 2048;

    #[global_allocator]
    static HEAP: LlffHeap = LlffHeap::empty();

    core::arch::global_asm!(
        ".section .text._start, \"ax\"",
        ".global _start",
        "_start:",
        "csrw mie, zero",
        "la sp, _stack_top",
        "la t1, _bss_start",
        "la t2, _bss_end",
        "1: bgeu t1, t2, 2f",
        "sw zero, 0(t1)",
        "addi t1, t1, 4",
        "j 1b",
        "2: j ota_fw_main",
    );

    unsafe extern "C" {
        static _heap_start: u8;
    }

    /// The flash as the application uses it: the driver, plus the phase marker.
    struct AppFlash(hw::Flash);

    impl ErrorType for AppFlash {
        type Error = CfiError;
    }

    impl ReadNorFlash for AppFlash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), CfiError> {
            self.0.read(offset, bytes)
        }
        fn capacity(&self) -> usize {
            self.0.capacity()
        }
    }

    impl NorFlash for AppFlash {
        const WRITE_SIZE: usize = hw::Flash::WRITE_SIZE;
        const ERASE_SIZE: usize = hw::Flash::ERASE_SIZE;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), CfiError> {
            self.0.erase(from, to)
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), CfiError> {
            self.0.write(offset, bytes)
        }
    }

    impl ota_core::flash::RegionDigests for AppFlash {}

    impl ota_app::Flash for AppFlash {
        fn phase_starts(&mut self, phase: Phase) {
            hw::ota_phase_marker(phase as u32);
        }
    }

    /// An `advance_ms` to finish after a reboot, and the request to answer then.
    #[repr(C)]
    struct Pending {
        magic: u32,
        json_len: u32,
        crc: u32,
        quotes: u32,
        target_ms: u64,
        json: [u8; PENDING_JSON_MAX],
    }

    struct Board {
        clock: &'static mut Clock,
        pending: &'static mut Pending,
        encoder: Encoder,
    }

    impl Board {
        fn now_ms(&mut self) -> u64 {
            self.clock.now_ms(timer::ticks())
        }

        fn events(&self, events: Vec<Stamped>) {
            for stamped in events {
                line(&stamped.console_line());
            }
        }

        fn send(&mut self, json: &str, style: Style) {
            uart::write(&self.encoder.encode(json.as_bytes(), style));
        }
    }

    fn line(text: &str) {
        uart::write(text.as_bytes());
        uart::write(b"\r\n");
    }

    #[unsafe(no_mangle)]
    extern "C" fn ota_fw_main(a0: u32, a1: u32, a2: u32, _a3: u32) -> ! {
        hw::install_trap_handler();
        // SAFETY: runs once, before the first allocation; the heap lies between the end of
        // `.bss` and the stack, which starts HEAP_BYTES later at the least (fw.x's 112 MiB).
        unsafe { HEAP.init(&raw const _heap_start as usize, HEAP_BYTES) };
        // SAFETY: the clock's block, the loader word and the pending block are RAM that no
        // section uses (`clock`'s docs).
        let (clock, loader_word, pending) = unsafe {
            (
                hw::fixed::<Clock>(clock::BLOCK_ADDRESS),
                core::ptr::read_volatile(clock::LOADER_WORD_ADDRESS as *const u64),
                hw::fixed::<Pending>(PENDING_ADDRESS),
            )
        };
        clock.power_on(loader_word, timer::ticks());
        uart::enable_rx_interrupt();
        plic::enable(uart::IRQ);
        hw::wake_on_interrupts();
        let mut board = Board { clock, pending, encoder: Encoder::new() };
        let settings = Settings {
            platform: PLATFORM.into(),
            app_name: "ota-qemu-fw".into(),
            default_device_id: "qemu-virt".into(),
            ..Settings::default()
        };
        let now = board.now_ms();
        let mut events = Vec::new();
        let start = match HandOff::decode(a0, a1, a2) {
            Some(handoff) => ota_app::start_booted(
                AppFlash(hw::Flash),
                LAYOUT,
                settings,
                booted(handoff),
                now,
                &mut events,
            ),
            None => {
                line("ota-qemu-fw: started without the boot loader's hand-off; deciding the boot here");
                ota_app::start(AppFlash(hw::Flash), LAYOUT, settings, now, &mut events)
            }
        };
        let crashed = events.iter().any(|s| s.event == Event::Crashed);
        board.events(events);
        match start {
            Start::Running(app) => run(board, app),
            Start::Reset { .. } if crashed => crash(),
            Start::Reset { .. } => hw::reboot(),
            Start::Hung { .. } => hang(),
            Start::Bricked { .. } => loop {
                hw::wait_for_interrupt();
            },
        }
    }

    fn booted(handoff: HandOff) -> Booted {
        let reason = match handoff.reason {
            Reason::Committed => ota_app::BootReason::Committed,
            Reason::Trial => ota_app::BootReason::Trial,
            Reason::Reverted { from } => ota_app::BootReason::Reverted { from: from.index() as u8 },
            Reason::FellBack { from } => ota_app::BootReason::FellBack { from: from.index() as u8 },
            Reason::TrialSkipped => ota_app::BootReason::TrialSkipped,
            Reason::Recovered => ota_app::BootReason::Recovered,
        };
        Booted { slot: handoff.slot, reason, first_boot: handoff.first_boot, merge_from: handoff.merge_from }
    }

    /// A hang: a real spin, with interrupts off and no kick. The runner, as the external
    /// watchdog, sees mtime run on without a kick and resets the board.
    #[allow(clippy::empty_loop)]
    fn hang() -> ! {
        loop {}
    }

    /// A crash at boot: a real trap (an illegal instruction), whose handler resets the board.
    fn crash() -> ! {
        // SAFETY: `unimp` traps; the trap handler resets the board and never returns here.
        unsafe { core::arch::asm!("unimp", options(noreturn)) }
    }

    /// The application as `ota_app::web` drives it: owned by the main loop, its events printed
    /// as they come.
    struct Host<'a> {
        board: &'a mut Board,
        app: &'a mut App<AppFlash>,
    }

    impl AppHost for Host<'_> {
        type Flash = AppFlash;
        fn with_app<T>(&mut self, f: impl FnOnce(&mut App<AppFlash>, u64) -> T) -> Result<T, RpcError> {
            let now = self.board.now_ms();
            let result = f(self.app, now);
            self.board.events(self.app.take_events());
            Ok(result)
        }
    }

    /// Prints the kick line when the last one is at least KICK_SPACING_TICKS old.
    fn kick(last_kick: &Cell<u64>) {
        if timer::ticks().saturating_sub(last_kick.get()) >= KICK_SPACING_TICKS {
            line(KICK_LINE);
            last_kick.set(timer::ticks());
        }
    }

    /// The main loop: serve the UART and the network, run what is due, kick, sleep. The
    /// application's timers run only when a frame or a request was handled or a deadline passed:
    /// a wake for a few bytes of a frame must not read the boot state (a stream of RPC bytes is
    /// hundreds of wakes per frame).
    fn run(mut board: Board, mut app: Box<App<AppFlash>>) -> ! {
        let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
        let last_kick = Cell::new(0);
        let mut net = match net::start() {
            Ok((n, irq)) => {
                line(&alloc::format!(
                    "ota-qemu-fw: network up: {}:{} (virtio-mmio irq {irq})",
                    net::ADDRESS,
                    net::HTTP_PORT,
                ));
                Some(n)
            }
            Err(why) => {
                line(&alloc::format!("ota-qemu-fw: no network ({why}): no HTTP, no pulls"));
                None
            }
        };
        resume_advance(&mut board, &mut app, net.as_mut(), &last_kick);
        let mut bytes = Vec::new();
        // What is due at once (a commit timeout of 0) runs at the first turn.
        let mut due_ms = Some(0);
        loop {
            while let Some(byte) = uart::read() {
                bytes.push(byte);
            }
            plic::acknowledge();
            let mut items = Vec::new();
            decoder.feed(&bytes, |item| items.push(item));
            bytes.clear();
            let mut handled = !items.is_empty();
            for item in items {
                on_item(&mut board, &mut app, net.as_mut(), &last_kick, item);
            }
            if let Some(n) = net.as_mut() {
                let pending = n.poll(&mut Host { board: &mut board, app: &mut app });
                handled |= !pending.is_empty() || n.busy();
                for ota_net::Pending { slot, action } in pending {
                    let response = answer(&mut board, &mut app, n, &last_kick, action);
                    n.respond(slot, response);
                }
            }
            let now = board.now_ms();
            if handled || due_ms.is_some_and(|due| now >= due) {
                tick(&mut board, &mut app, net.as_mut(), &last_kick, now);
                due_ms = app.next_due_ms();
            }
            kick(&last_kick);
            // The next deadline (with the clock running), the network's, and a kick at least
            // every KICK_PERIOD_TICKS of mtime, so that an idle healthy firmware is never taken
            // for a hung one.
            let mut wake = timer::ticks().saturating_add(KICK_PERIOD_TICKS);
            if let Some(at) = due_ms.and_then(|due| board.clock.ticks_at(due)) {
                wake = wake.min(at);
            }
            if let Some(n) = net.as_mut() {
                if let Some(at) = net::wake_at(n) {
                    wake = wake.min(at);
                }
                if n.busy() {
                    wake = wake.min(timer::ticks().saturating_add(net::BUSY_WAKE_TICKS));
                }
            }
            timer::wake_at(wake);
            hw::wait_for_interrupt();
        }
    }

    /// The answer to an HTTP request that needs more than the application: a pull, an RPC frame
    /// or call.
    fn answer(
        board: &mut Board,
        app: &mut App<AppFlash>,
        net: &mut Net,
        last_kick: &Cell<u64>,
        action: Action,
    ) -> HttpResponse {
        match action {
            Action::Respond(response) => response,
            Action::Pull(request) => web::pull_response(pull(board, app, net, last_kick, &request)),
            Action::Frame(body) => {
                match handle_frame(board, app, Some(net), last_kick, &body, Style::default()) {
                    Ok(reply) => web::frame_response(Ok(reply)),
                    Err(error) => {
                        let id = app.config().device_id;
                        web::frame_response(Err(frame::not_a_frame_json(&error, &id)))
                    }
                }
            }
            Action::Call { method, params } => {
                web::call_response(call(board, app, Some(net), last_kick, &method, &params, None))
            }
        }
    }

    /// A pull (§6.2): the bundle streams from `request.url` into the updater as it arrives, as
    /// the virtual board's `board::pull` does over `std::net`.
    fn pull(
        board: &mut Board,
        app: &mut App<AppFlash>,
        net: &mut Net,
        last_kick: &Cell<u64>,
        request: &PullRequest,
    ) -> Result<&'static str, RpcError> {
        let options = UpdateOptions {
            commit_timeout_s: request.commit_timeout_s,
            ignore_same_version: request.ignore_same_version,
        };
        let now = board.now_ms();
        let begun = app.update_begin(Source::Pull, options, None, None, now);
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
            let board = &mut *board;
            let app = &mut *app;
            let on_body = |piece: &[u8]| -> Result<(), String> {
                let now = board.now_ms();
                let written = app.update_data(id, piece, now).map_err(|e| e.message);
                board.events(app.take_events());
                written
            };
            net::get(net, &identity, &config.update_extra_http_headers, &request.url, on_body, || {
                kick(last_kick)
            })
        };
        let now = board.now_ms();
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

    /// Runs what is due at `now`; a reboot it asks for happens here.
    fn tick(
        board: &mut Board,
        app: &mut App<AppFlash>,
        net: Option<&mut Net>,
        last_kick: &Cell<u64>,
        now: u64,
    ) {
        let tick = app.tick(now);
        board.events(app.take_events());
        match tick {
            Tick::Reboot { why } => {
                line(&alloc::format!("reboot: {why}"));
                hw::reboot()
            }
            // Polling (`update.url`, `update.interval`): the pull runs here, its outcome is
            // in the events.
            Tick::Pull(request) => {
                if let Some(net) = net {
                    let _ = pull(board, app, net, last_kick, &request);
                }
            }
            Tick::Nothing => {}
        }
    }

    fn on_item(
        board: &mut Board,
        app: &mut App<AppFlash>,
        net: Option<&mut Net>,
        last_kick: &Cell<u64>,
        item: Item,
    ) {
        if let Some(reply) = item.device_reply() {
            uart::write(reply);
            return;
        }
        let Item::Frame { json, style } = item else { return };
        // Bytes that are not a request and get no error frame are dropped on the serial line.
        if let Ok(Some(reply)) = handle_frame(board, app, net, last_kick, &json, style) {
            board.send(&reply, style);
        }
    }

    /// One RPC frame, from the UART or `POST /rpc`: its reply frame, none for a notification or
    /// another device's frame, or the error for bytes that are not a request and get no error
    /// frame.
    fn handle_frame(
        board: &mut Board,
        app: &mut App<AppFlash>,
        net: Option<&mut Net>,
        last_kick: &Cell<u64>,
        json: &[u8],
        style: Style,
    ) -> Result<Option<String>, FrameError> {
        let id = app.config().device_id;
        let request = match frame::parse_request(json) {
            Ok(request) => request,
            Err(error) => {
                return match Response::bad_request(&error, &id) {
                    Some(response) => Ok(Some(response.to_json())),
                    None => Err(error),
                };
            }
        };
        if !frame::dst_is_local(&request, &id) {
            return Ok(None);
        }
        let outcome = call(board, app, net, last_kick, &request.method, &request.params, Some((json, style)));
        Ok(reply(&request, &id, outcome).map(|r| r.to_json()))
    }

    /// A method: the board's `Board.Clock`, or the application's services (a pull run here).
    /// `frame` is the request's JSON and framing, kept for an `advance_ms` a reboot interrupts.
    fn call(
        board: &mut Board,
        app: &mut App<AppFlash>,
        net: Option<&mut Net>,
        last_kick: &Cell<u64>,
        method: &str,
        params: &Value,
        frame: Option<(&[u8], Style)>,
    ) -> Result<Value, RpcError> {
        if method == "Board.Clock" {
            return board_clock(board, app, net, last_kick, params, frame);
        }
        let now = board.now_ms();
        let reply = service::dispatch(app, method, params, now, now);
        board.events(app.take_events());
        match reply {
            Reply::Result(value) => Ok(value),
            Reply::Error(e) => Err(e),
            Reply::Pull(request) => match net {
                Some(net) => web::pull_result(pull(board, app, net, last_kick, &request)),
                None => Err(RpcError::new(-1, "this board has no network device: nothing to pull over")),
            },
        }
    }

    fn reply(request: &Request, id: &str, outcome: Result<Value, RpcError>) -> Option<Response> {
        match outcome {
            Ok(value) => Response::ok(request, id, value),
            Err(e) if e.code == 404 => Response::no_handler(request, id),
            Err(e) => Response::error(request, id, e.code as i64, e.message),
        }
    }

    /// `Board.Clock {freeze|resume|advance_ms}`, as the virtual board has it: `advance_ms`
    /// freezes the clock and runs everything due on the way, at its time, before it answers.
    fn board_clock(
        board: &mut Board,
        app: &mut App<AppFlash>,
        net: Option<&mut Net>,
        last_kick: &Cell<u64>,
        params: &Value,
        frame: Option<(&[u8], Style)>,
    ) -> Result<Value, RpcError> {
        if params.get("freeze").and_then(Value::as_bool) == Some(true) {
            board.clock.freeze(timer::ticks());
        }
        if params.get("resume").and_then(Value::as_bool) == Some(true) {
            board.clock.resume(timer::ticks());
        }
        if let Some(ms) = params.get("advance_ms") {
            let Some(ms) = ms.as_u64().filter(|&ms| ms <= ota_app::app::DELAY_MAX_MS) else {
                let bound = ota_app::app::DELAY_MAX_MS;
                return Err(RpcError::new(-1, alloc::format!("advance_ms must be 0 to {bound}")));
            };
            board.clock.freeze(timer::ticks());
            let target_ms = board.now_ms().saturating_add(ms);
            if let Some((json, style)) = frame.filter(|(json, _)| json.len() <= PENDING_JSON_MAX) {
                // Kept for a reboot on the way: the next firmware finishes the advance and answers.
                let p = &mut *board.pending;
                p.json[..json.len()].copy_from_slice(json);
                (p.json_len, p.crc, p.quotes, p.target_ms) =
                    (json.len() as u32, style.crc as u32, style.quotes as u32, target_ms);
                p.magic = PENDING_MAGIC;
            }
            advance_to(board, app, net, last_kick, target_ms);
            board.pending.magic = 0;
        }
        Ok(json!({"now_ms": board.now_ms(), "frozen": board.clock.is_frozen()}))
    }

    /// Steps the frozen clock to `target_ms`, running each due thing at its time.
    fn advance_to(
        board: &mut Board,
        app: &mut App<AppFlash>,
        mut net: Option<&mut Net>,
        last_kick: &Cell<u64>,
        target_ms: u64,
    ) {
        for _ in 0..ADVANCE_ROUNDS_MAX {
            let Some(due) = app.next_due_ms().filter(|&due| due <= target_ms) else { break };
            board.clock.set_frozen_ms(due);
            tick(board, app, net.as_deref_mut(), last_kick, due);
        }
        board.clock.set_frozen_ms(target_ms);
        tick(board, app, net, last_kick, target_ms);
    }

    /// Finishes an `advance_ms` that a reboot interrupted, and answers its request.
    fn resume_advance(
        board: &mut Board,
        app: &mut App<AppFlash>,
        net: Option<&mut Net>,
        last_kick: &Cell<u64>,
    ) {
        if board.pending.magic != PENDING_MAGIC {
            return;
        }
        let p = &*board.pending;
        let json: Vec<u8> = p.json[..(p.json_len as usize).min(PENDING_JSON_MAX)].to_vec();
        let style = Style { crc: p.crc != 0, quotes: p.quotes != 0 };
        let target_ms = p.target_ms;
        let Ok(request) = frame::parse_request(&json) else {
            board.pending.magic = 0;
            return;
        };
        if !board.clock.is_frozen() {
            board.clock.freeze(timer::ticks());
        }
        advance_to(board, app, net, last_kick, target_ms);
        board.pending.magic = 0;
        let id = app.config().device_id;
        let now = board.now_ms();
        let frozen = board.clock.is_frozen();
        if let Some(response) = reply(&request, &id, Ok(json!({"now_ms": now, "frozen": frozen}))) {
            board.send(&response.to_json(), style);
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        let _ = write!(uart::Writer, "\r\nota-qemu-fw: panic: {info}; reset\r\n");
        hw::reboot()
    }
}
