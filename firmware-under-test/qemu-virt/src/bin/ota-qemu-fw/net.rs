//! The firmware's network (the boot loader has none, and no allocator): QEMU `virt`'s virtio-mmio
//! network device (the `virtio-drivers` crate) as a smoltcp device, under `ota_net`'s stack, with
//! the address QEMU's user network (slirp) expects of its guest: 10.0.2.15/24, gateway 10.0.2.2,
//! which is the host's loopback seen from the guest. The HTTP service and the pull client are
//! `ota_net`'s, shared with the ESP32-C3 port; only the device and its interrupt are here.
//!
//! Time: QEMU runs with `-icount shift=0,sleep=off`, so the guest's idle time is skipped and
//! mtime races ahead while the host is slow. The main loop therefore sleeps at most
//! [`BUSY_WAKE_TICKS`] while a connection is open, so smoltcp's retransmission timers see time
//! pass in small steps, and the pull client counts its patience in wakes without progress, not
//! in mtime.

extern crate alloc;

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::string::String;
use core::cell::RefCell;
use core::ptr::NonNull;

use ota_net::{Addressing, Buffers, Setup};
use ota_proto::http::client::{DeviceIdentity, PullError, PullOutcome};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, Ipv4Address, Ipv4Cidr};
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::mmio::{MmioError, MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

use ota_port_qemu_virt::clock::TICKS_PER_MS;
use ota_port_qemu_virt::hw::{self, plic, timer};

/// The guest's address on QEMU's user network, and its gateway (the host).
pub const ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
pub const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// The port the HTTP service listens on (the runner forwards a free host port to it).
pub use ota_net::HTTP_PORT;
/// The longest the main loop sleeps while a connection is open: 1 ms of mtime.
pub const BUSY_WAKE_TICKS: u64 = TICKS_PER_MS;
/// A pull gives up after this many wakes in a row without a byte or a state change.
const PULL_PATIENCE_WAKES: u32 = 2_000_000;

/// `virt`'s eight virtio-mmio slots: base, stride, the PLIC line of slot 0.
const SLOT_BASE: usize = 0x1000_1000;
const SLOT_STRIDE: usize = 0x1000;
const SLOTS: usize = 8;
const SLOT_IRQ_0: u32 = 1;
const QUEUE_SIZE: usize = 16;
const FRAME_BYTES: usize = 2048;

/// DMA for the virtio queues: RAM from the heap, physical = virtual (no MMU).
struct DmaHal;

// SAFETY: memory comes zeroed and page-aligned from the allocator and goes back there; there is
// no IOMMU, so sharing is the identity.
unsafe impl Hal for DmaHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("a page-aligned layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("memory for the virtio queues");
        (ptr.as_ptr() as usize as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("a page-aligned layout");
        // SAFETY: allocated by `dma_alloc` with this layout (the trait's contract).
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).expect("a non-null MMIO address")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

type Nic = VirtIONet<DmaHal, MmioTransport<'static>, QUEUE_SIZE>;

/// The network device as smoltcp sees it.
pub struct Device(RefCell<Nic>);

pub struct RxToken<'a>(&'a RefCell<Nic>, RxBuffer);
pub struct TxToken<'a>(&'a RefCell<Nic>);

impl phy::Device for Device {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // Acknowledged before the queue is looked at: a frame that arrives after this look
        // raises the interrupt again, so the main loop's `wfi` cannot sleep through it.
        let _ = self.0.borrow_mut().ack_interrupt();
        let buffer = self.0.borrow_mut().receive().ok()?;
        Some((RxToken(&self.0, buffer), TxToken(&self.0)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        self.0.borrow().can_send().then_some(TxToken(&self.0))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(QUEUE_SIZE / 2);
        caps
    }
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(self.1.packet());
        // A buffer that cannot go back only shrinks the queue.
        let _ = self.0.borrow_mut().recycle_rx_buffer(self.1);
        result
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut nic = self.0.borrow_mut();
        let mut buffer = nic.new_tx_buffer(len);
        let result = f(buffer.packet_mut());
        // A frame the device refuses is lost, as on a wire; TCP sends it again.
        let _ = nic.send(buffer);
        result
    }
}

/// The stack on the virtio device.
pub type Net = ota_net::Net<Device>;

fn now() -> Instant {
    Instant::from_micros((timer::ticks() / (TICKS_PER_MS / 1000)) as i64)
}

/// Finds the network device in the virtio-mmio slots and brings the interface up, with the
/// PLIC line of its slot; why not when QEMU was started without one or it cannot be used.
pub fn start() -> Result<(Net, u32), String> {
    let mut found = None;
    for slot in 0..SLOTS {
        let Some(header) = NonNull::new((SLOT_BASE + slot * SLOT_STRIDE) as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: `virt` maps a virtio-mmio region of SLOT_STRIDE bytes at each slot, and
        // nothing else in the firmware touches them.
        match unsafe { MmioTransport::new(header, SLOT_STRIDE) } {
            Ok(transport) if transport.device_type() == DeviceType::Network => {
                found = Some((transport, SLOT_IRQ_0 + slot as u32));
                break;
            }
            Ok(_) => {}
            // An empty slot reads device id 0.
            Err(MmioError::InvalidDeviceID(_)) => {}
            Err(e) => return Err(alloc::format!("virtio-mmio slot {slot}: {e}")),
        }
    }
    let Some((transport, irq)) = found else {
        return Err("no virtio network device in the virtio-mmio slots".into());
    };
    let nic = Nic::new(transport, FRAME_BYTES).map_err(|e| alloc::format!("virtio-net: {e}"))?;
    let mac = nic.mac_address();
    let setup = Setup {
        addressing: Addressing::Static { address: Ipv4Cidr::new(ADDRESS, 24), gateway: GATEWAY },
        buffers: Buffers::LARGE,
        clock: now,
        random_seed: timer::ticks(),
        pull_patience_waits: PULL_PATIENCE_WAKES,
    };
    let mut net =
        Net::new(Device(RefCell::new(nic)), HardwareAddress::Ethernet(EthernetAddress(mac)), setup)?;
    net.device_mut().0.borrow_mut().enable_interrupts();
    plic::enable(irq);
    Ok((net, irq))
}

/// When smoltcp next needs a poll, in mtime ticks.
pub fn wake_at(net: &mut Net) -> Option<u64> {
    let delay = net.poll_delay()?;
    Some(timer::ticks().saturating_add(delay.total_micros() * (TICKS_PER_MS / 1000)))
}

/// `ota_net`'s pull, sleeping in `wfi` between wakes: until smoltcp's next timer, a frame, or
/// [`BUSY_WAKE_TICKS`] at most; `kick` runs at every wake.
pub fn get(
    net: &mut Net,
    identity: &DeviceIdentity,
    extra_headers: &[(String, String)],
    url: &str,
    on_body: impl FnMut(&[u8]) -> Result<(), String>,
    mut kick: impl FnMut(),
) -> Result<PullOutcome, PullError> {
    net.get(identity, extra_headers, url, on_body, |delay| {
        kick();
        let busy = timer::ticks().saturating_add(BUSY_WAKE_TICKS);
        let wake = match delay {
            Some(d) => busy.min(timer::ticks().saturating_add(d.total_micros() * (TICKS_PER_MS / 1000))),
            None => busy,
        };
        timer::wake_at(wake);
        plic::acknowledge();
        hw::wait_for_interrupt();
    })
}
