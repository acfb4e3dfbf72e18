//! Wi-Fi in station mode: esp-radio's station interface as a smoltcp device under `ota_net`'s
//! stack (the HTTP service on port 80 and the pulls, the same code as the QEMU port's), its
//! address from DHCP. esp-radio needs a preemptive scheduler for its own tasks: esp-rtos, started
//! here on TIMG0 only when `conf9.json` enables the station, so a board without Wi-Fi runs as
//! before, with no radio and no scheduler.
//!
//! The join runs beside the main loop, not in it: an `async` task (connect, wait for the
//! disconnection, connect again) that the main loop polls once per turn, so the serial ports are
//! answered and the watchdog is fed while the access point is slow or absent.

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use embassy_net_driver::Driver;
use esp_hal::peripherals::{FROM_CPU_INTR0, TIMG0, WIFI};
use esp_hal::timer::timg::TimerGroup;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethodConfig, Config, ControllerConfig, Interface, WifiController};
use ota_net::smoltcp::phy::{self, DeviceCapabilities, Medium};
use ota_net::smoltcp::time::Instant;
use ota_net::smoltcp::wire::{EthernetAddress, HardwareAddress};
use ota_net::{Addressing, Buffers, Setup};

/// A failed join is tried again after this long.
const REJOIN_AFTER_MS: u64 = 5_000;
/// A pull gives up after this many waits in a row without a byte: each is one main-loop turn of
/// at least [`PULL_WAIT_MS`], so about 30 s without data.
const PULL_PATIENCE_WAITS: u32 = 30_000;
/// The longest a pull's wait lasts (it also feeds the watchdog).
pub const PULL_WAIT_MS: u64 = 1;

/// The peripherals the radio takes, kept unused when the station is off.
pub struct Radio {
    pub timg0: TIMG0<'static>,
    /// The scheduler's software interrupt.
    pub from_cpu_intr0: FROM_CPU_INTR0<'static>,
    pub wifi: WIFI<'static>,
}

/// An embassy-net-driver device (esp-radio's interface) as smoltcp sees it. The main loop polls
/// every turn, so the driver's wakers are not needed: a no-op one is registered.
pub struct Device<D>(D);

pub struct RxToken<T>(T);
pub struct TxToken<T>(T);

impl<D: Driver> phy::Device for Device<D> {
    type RxToken<'a>
        = RxToken<D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let mut cx = Context::from_waker(Waker::noop());
        self.0.receive(&mut cx).map(|(rx, tx)| (RxToken(rx), TxToken(tx)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        let mut cx = Context::from_waker(Waker::noop());
        self.0.transmit(&mut cx).map(TxToken)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let driver = self.0.capabilities();
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = driver.max_transmission_unit;
        caps.max_burst_size = driver.max_burst_size;
        caps
    }
}

impl<T: embassy_net_driver::RxToken> phy::RxToken for RxToken<T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        self.0.consume(|bytes| f(bytes))
    }
}

impl<T: embassy_net_driver::TxToken> phy::TxToken for TxToken<T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.consume(len, f)
    }
}

/// The stack on the station interface.
pub type Net = ota_net::Net<Device<Interface>>;

/// What the join task tells the main loop.
#[derive(Default)]
struct News {
    lines: Vec<String>,
    /// The station left its network since the last poll.
    left: bool,
}

/// The join task, and its news for the main loop.
pub struct Station {
    join: Pin<Box<dyn Future<Output = ()>>>,
    news: Rc<RefCell<News>>,
}

impl Station {
    /// Runs the join task as far as it can go now; what it has to say, and whether the station
    /// left its network meanwhile (the address is then renewed: the next network may differ).
    pub fn poll(&mut self) -> (Vec<String>, bool) {
        let mut cx = Context::from_waker(Waker::noop());
        let _ = self.join.as_mut().poll(&mut cx);
        let news = core::mem::take(&mut *self.news.borrow_mut());
        (news.lines, news.left)
    }
}

/// Ready once `now_ms()` reaches `at_ms` (the main loop polls every turn).
struct Until {
    at_ms: u64,
    now_ms: fn() -> u64,
}

impl Future for Until {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if (self.now_ms)() >= self.at_ms { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// Starts the scheduler and the radio, configures the station for `ssid` (WPA2 with `pass`, or
/// an open network when it is empty) and brings the stack up with DHCP; why not when the radio
/// refuses.
pub fn start(radio: Radio, ssid: &str, pass: &str, now_ms: fn() -> u64) -> Result<(Station, Net), String> {
    let timers = TimerGroup::new(radio.timg0);
    esp_rtos::start(timers.timer0, radio.from_cpu_intr0);
    let mut controller = WifiController::new(radio.wifi, ControllerConfig::default())
        .map_err(|e| format!("the radio did not start: {e:?}"))?;
    let ssid_field = ssid.try_into().map_err(|e| format!("wifi.sta.ssid {ssid:?}: {e:?}"))?;
    let authentication = if pass.is_empty() {
        AuthenticationMethodConfig::Open
    } else {
        AuthenticationMethodConfig::Wpa2Personal(
            pass.try_into().map_err(|e| format!("wifi.sta.pass: {e:?}"))?,
        )
    };
    let config =
        Config::Station(StationConfig::default().with_ssid(ssid_field).with_authentication(authentication));
    controller.set_config(&config).map_err(|e| format!("the station's configuration: {e:?}"))?;
    let interface = Interface::station();
    let mac = interface.mac_address();
    let setup = Setup {
        addressing: Addressing::Dhcp,
        buffers: Buffers::SMALL,
        clock: || {
            Instant::from_micros(esp_hal::time::Instant::now().duration_since_epoch().as_micros() as i64)
        },
        random_seed: u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
            ^ esp_hal::time::Instant::now().duration_since_epoch().as_micros(),
        pull_patience_waits: PULL_PATIENCE_WAITS,
    };
    let net = Net::new(Device(interface), HardwareAddress::Ethernet(EthernetAddress(mac)), setup)?;
    let news = Rc::new(RefCell::new(News::default()));
    let join = {
        let (news, ssid) = (news.clone(), String::from(ssid));
        Box::pin(async move {
            let say = |line: String| news.borrow_mut().lines.push(line);
            loop {
                say(format!("wifi: joining {ssid}"));
                match controller.connect_async().await {
                    Ok(_) => {
                        say(format!("wifi: joined {ssid}; waiting for an address (DHCP)"));
                        let why = controller.wait_for_disconnect_async().await;
                        say(format!("wifi: left {ssid} ({why:?})"));
                        news.borrow_mut().left = true;
                    }
                    Err(e) => {
                        say(format!("wifi: could not join {ssid} ({e:?}); again in {REJOIN_AFTER_MS} ms"));
                        Until { at_ms: now_ms() + REJOIN_AFTER_MS, now_ms }.await;
                    }
                }
            }
        })
    };
    Ok((Station { join, news }, net))
}
