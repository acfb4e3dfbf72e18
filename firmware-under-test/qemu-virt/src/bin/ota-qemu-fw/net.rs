//! The firmware's network (the boot loader has none, and no allocator): QEMU `virt`'s virtio-mmio network device (the `virtio-drivers` crate) under
//! smoltcp, with the address QEMU's user network (slirp) expects of its guest: 10.0.2.15/24,
//! gateway 10.0.2.2, which is the host's loopback seen from the guest.
//!
//! On it run the device's HTTP service, `ota_app::web`'s [`Connection`] per socket, at most
//! [`CONNECTIONS_MAX`] at once (one more gets 503), and the pull client, `ota_proto`'s
//! socket-free [`ResponseParser`] driven from a smoltcp socket. Everything here is the port's
//! plumbing: what a request means is `ota_app`'s, what goes on the wire is `ota_proto`'s.
//!
//! Time: QEMU runs with `-icount shift=0,sleep=off`, so the guest's idle time is skipped and
//! mtime races ahead while the host is slow. The main loop therefore sleeps at most
//! [`BUSY_WAKE_TICKS`] while a connection is open, so smoltcp's retransmission timers see time
//! pass in small steps, and the pull client counts its patience in wakes without progress, not
//! in mtime.

extern crate alloc;

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ptr::NonNull;

use ota_app::web::{Action, AppHost, Connection};
use ota_proto::http::client::{
    self, DeviceIdentity, HttpUrl, Progress, PullError, PullOutcome, REDIRECTS_MAX, Reply, ResponseParser,
};
use ota_proto::http::response::Response;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
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
pub const HTTP_PORT: u16 = 80;
/// HTTP connections served at once; one more is answered 503 and closed.
pub const CONNECTIONS_MAX: usize = 4;
/// Sockets listening for HTTP: more than [`CONNECTIONS_MAX`], so that one past the bound is
/// accepted to be answered 503 even while answered connections linger until their clients close.
const SOCKETS: usize = 2 * CONNECTIONS_MAX;
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
const SERVER_RX_BYTES: usize = 64 * 1024;
const SERVER_TX_BYTES: usize = 8 * 1024;
const CLIENT_RX_BYTES: usize = 64 * 1024;
const CLIENT_TX_BYTES: usize = 4 * 1024;

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
struct Device(RefCell<Nic>);

struct RxToken<'a>(&'a RefCell<Nic>, RxBuffer);
struct TxToken<'a>(&'a RefCell<Nic>);

impl phy::Device for Device {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
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

/// One HTTP connection's place: its socket and where its request stands.
struct Server {
    handle: SocketHandle,
    connection: Option<Connection>,
    /// Bytes to send, and how many went.
    out: Vec<u8>,
    sent: usize,
    /// The response is complete in `out`: close once it went.
    closing: bool,
    /// An [`Action`] was handed to the board; its response comes through [`Net::respond`].
    awaiting: bool,
    /// Past the bound: answered 503, its request read and dropped until it closes.
    refused: bool,
}

impl Server {
    fn new(handle: SocketHandle) -> Server {
        Server {
            handle,
            connection: None,
            out: Vec::new(),
            sent: 0,
            closing: false,
            awaiting: false,
            refused: false,
        }
    }

    /// Whether it holds one of the [`CONNECTIONS_MAX`] places: a request in progress, or an
    /// answer still to go.
    fn holds_a_place(&self) -> bool {
        self.connection.is_some() && !(self.closing && self.sent == self.out.len())
    }
}

/// A request that needs the board: [`Net::respond`] with the same `slot` answers it.
pub struct Pending {
    pub slot: usize,
    pub action: Action,
}

/// The stack: the device, the interface and the server sockets.
pub struct Net {
    device: Device,
    iface: Interface,
    sockets: SocketSet<'static>,
    servers: Vec<Server>,
    /// The PLIC line of the device's slot.
    pub irq: u32,
    next_local_port: u16,
}

fn now() -> Instant {
    Instant::from_micros((timer::ticks() / (TICKS_PER_MS / 1000)) as i64)
}

fn server_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; SERVER_RX_BYTES]),
        tcp::SocketBuffer::new(vec![0; SERVER_TX_BYTES]),
    );
    socket.set_nagle_enabled(false);
    socket
}

impl Net {
    /// Finds the network device in the virtio-mmio slots and brings the interface up; why not
    /// when QEMU was started without one or it cannot be used.
    pub fn start() -> Result<Net, String> {
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
        let mut device = Device(RefCell::new(nic));
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = timer::ticks();
        let mut iface = Interface::new(config, &mut device, now());
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ADDRESS), 24));
        });
        iface.routes_mut().add_default_ipv4_route(GATEWAY).map_err(|e| alloc::format!("route: {e}"))?;
        let mut sockets = SocketSet::new(Vec::new());
        let mut servers = Vec::new();
        for _ in 0..SOCKETS {
            let mut socket = server_socket();
            socket.listen(HTTP_PORT).map_err(|e| alloc::format!("listen: {e}"))?;
            servers.push(Server::new(sockets.add(socket)));
        }
        device.0.borrow_mut().enable_interrupts();
        plic::enable(irq);
        Ok(Net { device, iface, sockets, servers, irq, next_local_port: 49152 })
    }

    /// Moves frames both ways and serves the HTTP connections: bytes go to each connection's
    /// [`Connection`], which drives the application through `host`. Requests that need the board
    /// (a pull, an RPC frame or call) come back; answer each with [`Net::respond`].
    pub fn poll(&mut self, host: &mut impl AppHost) -> Vec<Pending> {
        let _ = self.device.0.borrow_mut().ack_interrupt();
        self.iface.poll(now(), &mut self.device, &mut self.sockets);
        let mut pending = Vec::new();
        let mut places_taken = self.servers.iter().filter(|s| s.holds_a_place()).count();
        for (slot, server) in self.servers.iter_mut().enumerate() {
            let socket = self.sockets.get_mut::<tcp::Socket>(server.handle);
            // A connection starts once established (a handshake in progress cannot receive or
            // send yet), with a place, or answered 503 without one.
            if server.connection.is_none() && !server.refused && socket.may_send() {
                if places_taken < CONNECTIONS_MAX {
                    server.connection = Some(Connection::new());
                    places_taken += 1;
                } else {
                    server.refused = true;
                    server.out = ota_app::web::too_many_connections().to_bytes();
                    server.closing = true;
                }
            }
            if server.refused {
                while socket.can_recv() {
                    let _ = socket.recv(|bytes| (bytes.len(), ()));
                }
            }
            if let Some(connection) = server.connection.as_mut() {
                while socket.can_recv() {
                    let out = &mut server.out;
                    let action = if connection.has_ended() {
                        // Read and dropped, so the client is not stuck sending a body nobody
                        // reads while the answer waits behind it.
                        socket.recv(|bytes| (bytes.len(), None)).ok().flatten()
                    } else {
                        socket
                            .recv(|bytes| {
                                (bytes.len(), connection.feed(host, bytes, |b| out.extend_from_slice(b)))
                            })
                            .ok()
                            .flatten()
                    };
                    match action {
                        Some(Action::Respond(response)) => {
                            server.out.extend_from_slice(&response.to_bytes());
                            server.closing = true;
                        }
                        Some(action) => {
                            server.awaiting = true;
                            pending.push(Pending { slot, action });
                        }
                        None => {}
                    }
                }
                if !connection.has_ended() && !socket.may_recv() {
                    // The client went away mid-request: nothing it started stays.
                    connection.closed(host);
                    server.closing = true;
                }
            }
            flush(socket, server);
        }
        self.iface.poll(now(), &mut self.device, &mut self.sockets);
        pending
    }

    /// Answers a request [`Net::poll`] handed back.
    pub fn respond(&mut self, slot: usize, response: Response) {
        let server = &mut self.servers[slot];
        server.out.extend_from_slice(&response.to_bytes());
        server.awaiting = false;
        server.closing = true;
        flush(self.sockets.get_mut::<tcp::Socket>(server.handle), server);
        self.iface.poll(now(), &mut self.device, &mut self.sockets);
    }

    /// Whether a connection is open (the main loop then sleeps at most [`BUSY_WAKE_TICKS`]).
    pub fn busy(&self) -> bool {
        self.servers.iter().any(|s| s.connection.is_some() || s.refused)
    }

    /// When smoltcp next needs a poll, in mtime ticks.
    pub fn wake_at(&mut self) -> Option<u64> {
        let delay = self.iface.poll_delay(now(), &self.sockets)?;
        Some(timer::ticks().saturating_add(delay.total_micros() * (TICKS_PER_MS / 1000)))
    }

    /// Fetches `url` over a socket of its own, following redirects, as the virtual board's
    /// `net::PullClient::get` does over `std::net`; `wait` runs at every wake (the kick). The
    /// HTTP connections are not served meanwhile: their bytes wait in their sockets.
    pub fn get(
        &mut self,
        identity: &DeviceIdentity,
        extra_headers: &[(String, String)],
        url: &str,
        mut on_body: impl FnMut(&[u8]) -> Result<(), String>,
        mut wait: impl FnMut(),
    ) -> Result<PullOutcome, PullError> {
        let mut url = HttpUrl::parse(url).map_err(PullError::connect)?;
        for redirects in 0.. {
            match self.get_once(identity, extra_headers, &url, &mut on_body, &mut wait)? {
                Reply::Outcome(outcome) => return Ok(outcome),
                Reply::Redirect(_) if redirects == REDIRECTS_MAX => {
                    return Err(PullError::failed(alloc::format!(
                        "Too many redirects: more than {REDIRECTS_MAX}, the last from {url}"
                    )));
                }
                Reply::Redirect(location) => url = url.join(&location).map_err(PullError::connect)?,
            }
        }
        unreachable!("the loop returns")
    }

    fn get_once(
        &mut self,
        identity: &DeviceIdentity,
        extra_headers: &[(String, String)],
        url: &HttpUrl,
        on_body: &mut impl FnMut(&[u8]) -> Result<(), String>,
        wait: &mut impl FnMut(),
    ) -> Result<Reply, PullError> {
        let head = client::request_head(identity, extra_headers, url)?;
        let host: Ipv4Address = url.host.parse().map_err(|_| {
            PullError::connect(alloc::format!(
                "{url}: this board has no DNS; give the host as an IPv4 address"
            ))
        })?;
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; CLIENT_RX_BYTES]),
            tcp::SocketBuffer::new(vec![0; CLIENT_TX_BYTES]),
        );
        socket.set_nagle_enabled(false);
        let local_port = self.next_local_port;
        self.next_local_port = if local_port == u16::MAX { 49152 } else { local_port + 1 };
        socket
            .connect(self.iface.context(), (IpAddress::Ipv4(host), url.port), local_port)
            .map_err(|e| PullError::connect(alloc::format!("{url}: {e}")))?;
        let handle = self.sockets.add(socket);
        let result = self.exchange(handle, url, head.as_bytes(), on_body, wait);
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        socket.abort();
        self.iface.poll(now(), &mut self.device, &mut self.sockets);
        self.sockets.remove(handle);
        result
    }

    fn exchange(
        &mut self,
        handle: SocketHandle,
        url: &HttpUrl,
        head: &[u8],
        on_body: &mut impl FnMut(&[u8]) -> Result<(), String>,
        wait: &mut impl FnMut(),
    ) -> Result<Reply, PullError> {
        let mut parser = ResponseParser::new(url);
        let mut sent = 0;
        let mut connected = false;
        let mut idle_wakes = 0;
        loop {
            self.iface.poll(now(), &mut self.device, &mut self.sockets);
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            let mut progress = false;
            if !connected && socket.may_send() {
                connected = true;
                progress = true;
            }
            if !connected && !socket.is_open() {
                return Err(PullError::connect(alloc::format!("{url}: connection refused")));
            }
            if connected && sent < head.len() && socket.can_send() {
                sent += socket.send_slice(&head[sent..]).unwrap_or(0);
                progress = true;
            }
            while socket.can_recv() {
                let want = parser.read_size_max();
                let step = socket.recv(|bytes| {
                    let n = bytes.len().min(want);
                    (n, parser.feed(&bytes[..n], &mut *on_body))
                });
                progress = true;
                match step {
                    Ok(Ok(Progress::Reply(reply))) => return Ok(reply),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(parser.closed()),
                }
            }
            if connected && !socket.may_recv() {
                return Err(parser.closed());
            }
            if progress {
                idle_wakes = 0;
                continue;
            }
            idle_wakes += 1;
            if idle_wakes > PULL_PATIENCE_WAKES {
                return Err(PullError::failed(alloc::format!(
                    "Update failed: no data {}",
                    parser.waiting_for()
                )));
            }
            wait();
            let wake = self.wake_at().unwrap_or(u64::MAX).min(timer::ticks().saturating_add(BUSY_WAKE_TICKS));
            timer::wake_at(wake);
            plic::acknowledge();
            hw::wait_for_interrupt();
            let _ = self.device.0.borrow_mut().ack_interrupt();
        }
    }
}

/// Sends what fits of a server's bytes, closes once all went, and makes a closed socket listen
/// again with a fresh place.
fn flush(socket: &mut tcp::Socket<'static>, server: &mut Server) {
    while server.sent < server.out.len() && socket.can_send() {
        match socket.send_slice(&server.out[server.sent..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => server.sent += n,
        }
    }
    if server.closing && server.sent == server.out.len() && socket.is_open() {
        socket.close();
    }
    // Nothing more goes either way: free the place at once rather than after TIME-WAIT.
    if matches!(socket.state(), tcp::State::TimeWait) {
        socket.abort();
    }
    // A request handed to the board keeps its place until answered, even if its client left.
    if !socket.is_open() && !server.awaiting {
        *server = Server::new(server.handle);
        let _ = socket.listen(HTTP_PORT);
    }
}
