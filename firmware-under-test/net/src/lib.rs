//! The device's network service over smoltcp, for any [`phy::Device`]: QEMU's virtio network
//! device and the ESP32-C3's Wi-Fi station run the same code, and the tests run it over a wire
//! of their own.
//!
//! On it run the device's HTTP service, `ota_app::web`'s [`Connection`] per socket, at most
//! [`CONNECTIONS_MAX`] at once (one more gets 503), and the pull client, `ota_proto`'s
//! socket-free [`ResponseParser`] driven from a smoltcp socket. The address is static (QEMU's
//! user network) or, with the `dhcp` feature, leased (Wi-Fi). Everything here is plumbing: what
//! a request means is `ota_app`'s, what goes on the wire is `ota_proto`'s, and the device, its
//! interrupt and how the board sleeps are the port's.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use ota_app::web::{Action, AppHost, Connection};
use ota_proto::http::client::{
    self, DeviceIdentity, HttpUrl, Progress, PullError, PullOutcome, REDIRECTS_MAX, Reply, ResponseParser,
};
use ota_proto::http::response::Response;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};

pub use smoltcp;

/// The port the HTTP service listens on.
pub const HTTP_PORT: u16 = 80;
/// HTTP connections served at once; one more is answered 503 and closed.
pub const CONNECTIONS_MAX: usize = 4;
/// Sockets listening for HTTP: more than [`CONNECTIONS_MAX`], so that one past the bound is
/// accepted to be answered 503 even while answered connections linger until their clients close.
const SOCKETS: usize = 2 * CONNECTIONS_MAX;
/// The first local port of a pull's socket (the dynamic range).
const LOCAL_PORT_FIRST: u16 = 49152;

/// Each socket's buffers, in bytes: what a port can afford of its RAM. A larger receive buffer
/// is a larger TCP window, so an upload or a pull needs fewer round trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffers {
    pub server_rx: usize,
    pub server_tx: usize,
    pub client_rx: usize,
    pub client_tx: usize,
}

impl Buffers {
    /// For a board with megabytes of RAM (QEMU): 584 KiB in all.
    pub const LARGE: Buffers =
        Buffers { server_rx: 64 * 1024, server_tx: 8 * 1024, client_rx: 64 * 1024, client_tx: 4 * 1024 };
    /// For a microcontroller (the ESP32-C3): 44 KiB in all, the pull's 9 KiB only while it runs.
    pub const SMALL: Buffers =
        Buffers { server_rx: 3 * 1024, server_tx: 1024, client_rx: 8 * 1024, client_tx: 1024 };
}

/// How the interface gets its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// A fixed address and default gateway.
    Static { address: Ipv4Cidr, gateway: Ipv4Address },
    /// A lease from a DHCP server: no address until one is offered, and none while it lapses.
    #[cfg(feature = "dhcp")]
    Dhcp,
}

/// What a port chooses when it brings the stack up.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub addressing: Addressing,
    pub buffers: Buffers,
    /// The board's time; smoltcp's timers run on it.
    pub clock: fn() -> Instant,
    /// Seeds TCP's initial sequence numbers and the pull's first local port.
    pub random_seed: u64,
    /// A pull gives up after this many waits in a row without a byte or a state change: the
    /// port knows how long its wait lasts (and, on QEMU's `-icount`, mtime is not wall time).
    pub pull_patience_waits: u32,
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
#[derive(Debug)]
pub struct Pending {
    pub slot: usize,
    pub action: Action,
}

/// The stack: the device, the interface, the server sockets and, with DHCP, the lease's socket.
pub struct Net<D: Device> {
    device: D,
    iface: Interface,
    sockets: SocketSet<'static>,
    servers: Vec<Server>,
    #[cfg(feature = "dhcp")]
    dhcp: Option<SocketHandle>,
    setup: Setup,
    next_local_port: u16,
}

fn server_socket(buffers: &Buffers) -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffers.server_rx]),
        tcp::SocketBuffer::new(vec![0; buffers.server_tx]),
    );
    socket.set_nagle_enabled(false);
    socket
}

impl<D: Device> Net<D> {
    /// Brings the interface up on `device` (whose address is `hardware`), with every HTTP
    /// socket listening on [`HTTP_PORT`]; why not when a socket cannot listen or the route is
    /// refused.
    pub fn new(mut device: D, hardware: HardwareAddress, setup: Setup) -> Result<Net<D>, String> {
        let mut config = Config::new(hardware);
        config.random_seed = setup.random_seed;
        let mut iface = Interface::new(config, &mut device, (setup.clock)());
        let mut sockets = SocketSet::new(Vec::new());
        #[cfg(feature = "dhcp")]
        let mut dhcp = None;
        match setup.addressing {
            Addressing::Static { address, gateway } => {
                iface.update_ip_addrs(|addrs| {
                    let _ = addrs.push(IpCidr::Ipv4(address));
                });
                iface
                    .routes_mut()
                    .add_default_ipv4_route(gateway)
                    .map_err(|e| alloc::format!("route: {e}"))?;
            }
            #[cfg(feature = "dhcp")]
            Addressing::Dhcp => dhcp = Some(sockets.add(smoltcp::socket::dhcpv4::Socket::new())),
        }
        let mut servers = Vec::new();
        for _ in 0..SOCKETS {
            let mut socket = server_socket(&setup.buffers);
            socket.listen(HTTP_PORT).map_err(|e| alloc::format!("listen: {e}"))?;
            servers.push(Server::new(sockets.add(socket)));
        }
        let next_local_port = LOCAL_PORT_FIRST + (setup.random_seed % 1024) as u16;
        Ok(Net {
            device,
            iface,
            sockets,
            servers,
            #[cfg(feature = "dhcp")]
            dhcp,
            setup,
            next_local_port,
        })
    }

    /// Drops the address and asks for a new lease at once: the link went down (a Wi-Fi station
    /// left its network), and the next network may hand out another. Nothing with a static
    /// address.
    pub fn renew_address(&mut self) {
        #[cfg(feature = "dhcp")]
        if let Some(handle) = self.dhcp {
            self.sockets.get_mut::<smoltcp::socket::dhcpv4::Socket>(handle).reset();
            self.iface.update_ip_addrs(|addrs| addrs.clear());
            self.iface.routes_mut().remove_default_ipv4_route();
        }
    }

    /// The device, for what only the port knows of it (its interrupt).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The interface's IPv4 address, once it has one.
    pub fn ipv4_address(&self) -> Option<Ipv4Address> {
        self.iface.ipv4_addr()
    }

    fn now(&self) -> Instant {
        (self.setup.clock)()
    }

    /// Moves frames both ways and, with DHCP, takes up or drops the lease.
    fn poll_interface(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        #[cfg(feature = "dhcp")]
        if let Some(handle) = self.dhcp {
            use smoltcp::socket::dhcpv4;
            match self.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
                Some(dhcpv4::Event::Configured(lease)) => {
                    self.iface.update_ip_addrs(|addrs| {
                        addrs.clear();
                        let _ = addrs.push(IpCidr::Ipv4(lease.address));
                    });
                    match lease.router {
                        Some(router) => {
                            let _ = self.iface.routes_mut().add_default_ipv4_route(router);
                        }
                        None => {
                            self.iface.routes_mut().remove_default_ipv4_route();
                        }
                    }
                }
                Some(dhcpv4::Event::Deconfigured) => {
                    self.iface.update_ip_addrs(|addrs| addrs.clear());
                    self.iface.routes_mut().remove_default_ipv4_route();
                }
                None => {}
            }
        }
    }

    /// Moves frames both ways and serves the HTTP connections: bytes go to each connection's
    /// [`Connection`], which drives the application through `host`. Requests that need the board
    /// (a pull, an RPC frame or call) come back; answer each with [`Net::respond`].
    pub fn poll(&mut self, host: &mut impl AppHost) -> Vec<Pending> {
        self.poll_interface();
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
        self.poll_interface();
        pending
    }

    /// Answers a request [`Net::poll`] handed back.
    pub fn respond(&mut self, slot: usize, response: Response) {
        let server = &mut self.servers[slot];
        server.out.extend_from_slice(&response.to_bytes());
        server.awaiting = false;
        server.closing = true;
        flush(self.sockets.get_mut::<tcp::Socket>(server.handle), server);
        self.poll_interface();
    }

    /// Whether a connection is open (a port then sleeps only briefly, so that TCP's timers see
    /// time pass in small steps).
    pub fn busy(&self) -> bool {
        self.servers.iter().any(|s| s.connection.is_some() || s.refused)
    }

    /// How long until smoltcp next needs a poll; `None`: not before a frame arrives.
    pub fn poll_delay(&mut self) -> Option<Duration> {
        let now = self.now();
        self.iface.poll_delay(now, &self.sockets)
    }

    /// Fetches `url` over a socket of its own, following redirects, as the virtual board's
    /// `net::PullClient::get` does over `std::net`. `wait` runs whenever nothing moved, with how
    /// long smoltcp can wait: the port sleeps (at most that long), kicks, or runs the other end
    /// of a test's wire. The HTTP connections are not served meanwhile: their bytes wait in
    /// their sockets.
    pub fn get(
        &mut self,
        identity: &DeviceIdentity,
        extra_headers: &[(String, String)],
        url: &str,
        mut on_body: impl FnMut(&[u8]) -> Result<(), String>,
        mut wait: impl FnMut(Option<Duration>),
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
        wait: &mut impl FnMut(Option<Duration>),
    ) -> Result<Reply, PullError> {
        let head = client::request_head(identity, extra_headers, url)?;
        let host: Ipv4Address = url.host.parse().map_err(|_| {
            PullError::connect(alloc::format!(
                "{url}: this board has no DNS; give the host as an IPv4 address"
            ))
        })?;
        if self.ipv4_address().is_none() {
            return Err(PullError::connect(alloc::format!("{url}: the board has no IP address yet")));
        }
        let buffers = self.setup.buffers;
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffers.client_rx]),
            tcp::SocketBuffer::new(vec![0; buffers.client_tx]),
        );
        socket.set_nagle_enabled(false);
        let local_port = self.next_local_port;
        self.next_local_port = if local_port == u16::MAX { LOCAL_PORT_FIRST } else { local_port + 1 };
        socket
            .connect(self.iface.context(), (IpAddress::Ipv4(host), url.port), local_port)
            .map_err(|e| PullError::connect(alloc::format!("{url}: {e}")))?;
        let handle = self.sockets.add(socket);
        let result = self.exchange(handle, url, head.as_bytes(), on_body, wait);
        self.sockets.get_mut::<tcp::Socket>(handle).abort();
        self.poll_interface();
        self.sockets.remove(handle);
        result
    }

    fn exchange(
        &mut self,
        handle: SocketHandle,
        url: &HttpUrl,
        head: &[u8],
        on_body: &mut impl FnMut(&[u8]) -> Result<(), String>,
        wait: &mut impl FnMut(Option<Duration>),
    ) -> Result<Reply, PullError> {
        let mut parser = ResponseParser::new(url);
        let mut sent = 0;
        let mut connected = false;
        let mut idle_waits = 0;
        loop {
            self.poll_interface();
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
                idle_waits = 0;
                continue;
            }
            idle_waits += 1;
            if idle_waits > self.setup.pull_patience_waits {
                return Err(PullError::failed(alloc::format!(
                    "Update failed: no data {}",
                    parser.waiting_for()
                )));
            }
            wait(self.poll_delay());
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
