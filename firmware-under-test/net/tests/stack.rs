//! `ota_net` on the host: the device's stack and a peer's plain smoltcp stack joined by a wire of
//! two in-memory queues, the device's application on a RAM flash. The clock stands still (the
//! wire loses nothing, so no timer is needed) and every exchange ends by the bytes moved, never
//! by time.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use ota_app::app::{self, App, RpcError, Settings, Start};
use ota_app::web::AppHost;
use ota_bundle::Bundle;
use ota_core::flash::RamFlash;
use ota_core::layout::{Layout, Region};
use ota_core::updater::Updater;
use ota_net::{Addressing, Buffers, CONNECTIONS_MAX, HTTP_PORT, Net, Setup};
use ota_proto::http::client::{DeviceIdentity, PullOutcome};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};

type Flash = RamFlash<'static, 4, 4096>;

const DEVICE: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const PEER: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const APP_SLOT_BYTES: u32 = 128 * 1024;
const FS_SLOT_BYTES: u32 = 64 * 1024;
const FLASH_BYTES: usize = (2 * 4096 + 2 * APP_SLOT_BYTES + 2 * FS_SLOT_BYTES) as usize;
/// Turns of both stacks an exchange may take; far more than any here needs.
const TURNS_MAX: usize = 100_000;

thread_local! {
    static NOW_MS: Cell<i64> = const { Cell::new(0) };
}

fn clock() -> Instant {
    Instant::from_millis(NOW_MS.with(Cell::get))
}

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of the wire: frames it sends go to the other end's queue.
struct End {
    rx: Queue,
    tx: Queue,
}

fn wire() -> (End, End) {
    let (a, b) = (Queue::default(), Queue::default());
    (End { rx: a.clone(), tx: b.clone() }, End { rx: b, tx: a })
}

struct RxToken(Vec<u8>);
struct TxToken(Queue);

impl phy::Device for End {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken, TxToken)> {
        let frame = self.rx.borrow_mut().pop_front()?;
        Some((RxToken(frame), TxToken(self.tx.clone())))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken> {
        Some(TxToken(self.tx.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.borrow_mut().push_back(frame);
        result
    }
}

/// The application as the main loop of a port holds it.
struct Host(App<Flash>);

impl AppHost for Host {
    type Flash = Flash;
    fn with_app<T>(&mut self, f: impl FnOnce(&mut App<Flash>, u64) -> T) -> Result<T, RpcError> {
        Ok(f(&mut self.0, 0))
    }
}

/// Two boot-state areas, two app slots, two fs slots, as on the simulator.
fn layout() -> Layout {
    let (e, app, fs) = (4096, APP_SLOT_BYTES, FS_SLOT_BYTES);
    Layout::new(
        e,
        4,
        [Region::new(0, e), Region::new(e, e)],
        [Region::new(2 * e, app), Region::new(2 * e + app, app)],
        [Region::new(2 * e + 2 * app, fs), Region::new(2 * e + 2 * app + fs, fs)],
    )
    .unwrap()
}

fn bundle(version: &str) -> Vec<u8> {
    let fs = ota_lfs::build_image(64 * 1024, 4096, &[("app.json", version.as_bytes())]);
    Bundle::new("fw", "host")
        .version(version)
        .build_id(&format!("b-{version}"))
        .app(vec![0x22; 20_000])
        .fs(fs)
        .build()
}

/// A device provisioned with v1, booted.
fn host() -> Host {
    let mut flash = Flash::new(Box::leak(vec![0xff; FLASH_BYTES].into_boxed_slice()));
    let device = ota_core::updater::Device {
        arch: ota_core::manifest::Platform::new("host").unwrap(),
        app_part: None,
    };
    let mut updater = Updater::begin_provision(&mut flash, &layout(), device, vec![0u8; 4096]).unwrap();
    updater.process(&mut flash, &bundle("1.0.0")).unwrap();
    updater.finish(&mut flash).unwrap();
    let settings = Settings { platform: "host".into(), ..Settings::default() };
    match app::start(flash, layout(), settings, 0, &mut Vec::new()) {
        Start::Running(app) => Host(*app),
        _ => panic!("v1 does not run"),
    }
}

fn device_stack(end: End) -> Net<End> {
    let setup = Setup {
        addressing: Addressing::Static { address: Ipv4Cidr::new(DEVICE, 24), gateway: PEER },
        buffers: Buffers::SMALL,
        clock,
        random_seed: 7,
        pull_patience_waits: 1_000,
    };
    Net::new(end, HardwareAddress::Ethernet(EthernetAddress([2, 0, 0, 0, 0, 1])), setup).unwrap()
}

/// The other end: a plain smoltcp interface at [`PEER`].
struct Peer {
    end: End,
    iface: Interface,
    sockets: SocketSet<'static>,
}

impl Peer {
    fn new(mut end: End) -> Peer {
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(EthernetAddress([2, 0, 0, 0, 0, 2]))),
            &mut end,
            clock(),
        );
        iface.update_ip_addrs(|addrs| addrs.push(IpCidr::new(IpAddress::Ipv4(PEER), 24)).unwrap());
        Peer { end, iface, sockets: SocketSet::new(Vec::new()) }
    }

    fn socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        )
    }

    /// A connection to the device's HTTP service, from local port `port`.
    fn connect(&mut self, port: u16) -> SocketHandle {
        let mut socket = Peer::socket();
        socket.connect(self.iface.context(), (IpAddress::Ipv4(DEVICE), HTTP_PORT), port).unwrap();
        self.sockets.add(socket)
    }

    fn poll(&mut self) {
        self.iface.poll(clock(), &mut self.end, &mut self.sockets);
    }

    fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut(handle)
    }
}

/// Runs both stacks until `done` holds of the peer.
fn run(net: &mut Net<End>, host: &mut Host, peer: &mut Peer, mut done: impl FnMut(&mut Peer) -> bool) {
    for _ in 0..TURNS_MAX {
        let pending = net.poll(host);
        assert!(pending.is_empty(), "nothing here needs the board: {pending:?}");
        peer.poll();
        if done(peer) {
            return;
        }
    }
    panic!("the exchange did not end within {TURNS_MAX} turns");
}

/// Sends `request` on `handle` as the window allows and reads the answer until the device
/// closes; the answer's text.
fn exchange(
    net: &mut Net<End>,
    host: &mut Host,
    peer: &mut Peer,
    handle: SocketHandle,
    request: &[u8],
) -> String {
    let (mut sent, mut answer) = (0, Vec::new());
    run(net, host, peer, |peer| {
        let socket = peer.tcp(handle);
        if socket.can_send() && sent < request.len() {
            sent += socket.send_slice(&request[sent..]).unwrap();
        }
        while socket.can_recv() {
            socket.recv(|bytes| (bytes.len(), answer.extend_from_slice(bytes))).unwrap();
        }
        !socket.may_recv() && socket.state() != tcp::State::SynSent
    });
    String::from_utf8(answer).unwrap()
}

#[test]
fn a_post_of_a_bundle_through_the_stack_applies_it() {
    let (a, b) = wire();
    let (mut net, mut host, mut peer) = (device_stack(a), host(), Peer::new(b));
    let bundle = bundle("2.0.0");
    let boundary = "ota-net-test";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.zip\"\r\n\
         Content-Type: application/zip\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&bundle);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut request = format!(
        "POST /update HTTP/1.1\r\nHost: 10.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let handle = peer.connect(50_000);
    let answer = exchange(&mut net, &mut host, &mut peer, handle, &request);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("Update applied, finalizing\r\n"), "{answer}");
    // The client closes its side too: the place is free again.
    peer.tcp(handle).close();
    for _ in 0..TURNS_MAX {
        if !net.busy() {
            return;
        }
        net.poll(&mut host);
        peer.poll();
    }
    panic!("the connection's place stayed taken after both sides closed");
}

#[test]
fn a_fifth_connection_is_answered_503_while_four_hold_their_places() {
    let (a, b) = wire();
    let (mut net, mut host, mut peer) = (device_stack(a), host(), Peer::new(b));
    // Four requests whose heads never end: each holds a place.
    let held: Vec<_> = (0..CONNECTIONS_MAX as u16).map(|i| peer.connect(50_000 + i)).collect();
    let mut started = vec![false; held.len()];
    run(&mut net, &mut host, &mut peer, |peer| {
        for (handle, started) in held.iter().zip(started.iter_mut()) {
            let socket = peer.tcp(*handle);
            if !*started && socket.can_send() {
                socket.send_slice(b"GET /update HTTP/1.1\r\nHost: 10").unwrap();
                *started = true;
            }
        }
        started.iter().all(|s| *s)
    });
    let fifth = peer.connect(50_100);
    let answer = exchange(&mut net, &mut host, &mut peer, fifth, b"GET /rpc/Sys.GetInfo HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    for handle in held {
        assert!(peer.tcp(handle).may_recv(), "a held connection stays open");
    }
}

#[test]
fn a_pull_over_a_socket_streams_the_whole_body() {
    let (a, b) = wire();
    let (mut net, mut peer) = (device_stack(a), Peer::new(b));
    let mut listener = Peer::socket();
    listener.listen(8080).unwrap();
    let listener = peer.sockets.add(listener);
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    reply.extend_from_slice(&body);
    let identity = DeviceIdentity {
        device_id: Some("dev".into()),
        mac: None,
        app: "fw".into(),
        platform: "host".into(),
        fw_version: "1.0.0".into(),
        fw_id: "b-1.0.0".into(),
    };
    let (mut head, mut sent, mut got) = (Vec::new(), 0, Vec::new());
    let outcome = net.get(
        &identity,
        &[],
        "http://10.0.0.2:8080/fw.zip",
        |piece| {
            got.extend_from_slice(piece);
            Ok(())
        },
        |_delay| {
            peer.poll();
            let socket = peer.tcp(listener);
            while socket.can_recv() {
                socket.recv(|bytes| (bytes.len(), head.extend_from_slice(bytes))).unwrap();
            }
            if head.ends_with(b"\r\n\r\n") && socket.can_send() && sent < reply.len() {
                sent += socket.send_slice(&reply[sent..]).unwrap();
            }
            peer.poll();
        },
    );
    assert_eq!(outcome, Ok(PullOutcome::Done { bytes: body.len() as u64 }));
    assert_eq!(got, body);
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("GET /fw.zip HTTP/1.1\r\n"), "{head}");
}

#[test]
fn a_pull_from_a_closed_port_is_refused_without_waiting_out_its_patience() {
    let (a, b) = wire();
    let (mut net, mut peer) = (device_stack(a), Peer::new(b));
    let identity = DeviceIdentity {
        device_id: None,
        mac: None,
        app: "fw".into(),
        platform: "host".into(),
        fw_version: "1.0.0".into(),
        fw_id: "b".into(),
    };
    let mut waits = 0;
    let outcome = net.get(
        &identity,
        &[],
        "http://10.0.0.2:9/fw.zip",
        |_| Ok(()),
        |_| {
            waits += 1;
            peer.poll();
        },
    );
    let error = outcome.unwrap_err();
    assert!(error.to_string().contains("connection refused"), "{error}");
    assert!(waits < 10, "refused after {waits} waits");
}

/// A DHCP server at [`PEER`] that offers [`DEVICE`] to whoever asks, on the peer's stack.
#[cfg(feature = "dhcp")]
struct DhcpServer(SocketHandle);

#[cfg(feature = "dhcp")]
impl DhcpServer {
    fn new(peer: &mut Peer) -> DhcpServer {
        use smoltcp::socket::udp;
        let buffer = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]);
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(67).unwrap();
        DhcpServer(peer.sockets.add(socket))
    }

    /// Answers a DISCOVER with an OFFER and a REQUEST with an ACK.
    fn serve(&self, peer: &mut Peer) {
        use smoltcp::socket::udp;
        use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr};
        let socket = peer.sockets.get_mut::<udp::Socket>(self.0);
        while let Ok((bytes, _)) = socket.recv() {
            let packet = DhcpPacket::new_checked(bytes).unwrap();
            let request = DhcpRepr::parse(&packet).unwrap();
            let message_type = match request.message_type {
                DhcpMessageType::Discover => DhcpMessageType::Offer,
                DhcpMessageType::Request => DhcpMessageType::Ack,
                _ => continue,
            };
            let reply = DhcpRepr {
                message_type,
                transaction_id: request.transaction_id,
                secs: 0,
                client_hardware_address: request.client_hardware_address,
                client_ip: Ipv4Address::UNSPECIFIED,
                your_ip: DEVICE,
                server_ip: PEER,
                router: Some(PEER),
                subnet_mask: Some(Ipv4Address::new(255, 255, 255, 0)),
                relay_agent_ip: Ipv4Address::UNSPECIFIED,
                broadcast: false,
                requested_ip: None,
                client_identifier: None,
                server_identifier: Some(PEER),
                parameter_request_list: None,
                dns_servers: None,
                max_size: None,
                lease_duration: Some(3600),
                renew_duration: None,
                rebind_duration: None,
                additional_options: &[],
            };
            let mut out = vec![0; reply.buffer_len()];
            reply.emit(&mut DhcpPacket::new_unchecked(&mut out[..])).unwrap();
            let socket = peer.sockets.get_mut::<udp::Socket>(self.0);
            socket.send_slice(&out, (IpAddress::Ipv4(Ipv4Address::BROADCAST), 68)).unwrap();
            return;
        }
    }
}

#[cfg(feature = "dhcp")]
#[test]
fn with_dhcp_the_service_answers_on_the_leased_address_and_not_before_nor_between_leases() {
    let (a, b) = wire();
    let setup = Setup {
        addressing: Addressing::Dhcp,
        buffers: Buffers::SMALL,
        clock,
        random_seed: 7,
        pull_patience_waits: 1_000,
    };
    let mut net = Net::new(a, HardwareAddress::Ethernet(EthernetAddress([2, 0, 0, 0, 0, 1])), setup).unwrap();
    let (mut host, mut peer) = (host(), Peer::new(b));
    assert_eq!(net.ipv4_address(), None, "no address before a lease");
    let identity = DeviceIdentity {
        device_id: None,
        mac: None,
        app: "fw".into(),
        platform: "host".into(),
        fw_version: "1.0.0".into(),
        fw_id: "b".into(),
    };
    let early = net.get(&identity, &[], "http://10.0.0.2/fw.zip", |_| Ok(()), |_| {}).unwrap_err();
    assert!(early.to_string().contains("no IP address yet"), "{early}");
    let server = DhcpServer::new(&mut peer);
    for _ in 0..TURNS_MAX {
        if net.ipv4_address().is_some() {
            break;
        }
        net.poll(&mut host);
        peer.poll();
        server.serve(&mut peer);
        peer.poll();
    }
    assert_eq!(net.ipv4_address(), Some(DEVICE));
    // The link went down and up again: the address goes until a new lease comes.
    net.renew_address();
    assert_eq!(net.ipv4_address(), None);
    for _ in 0..TURNS_MAX {
        if net.ipv4_address().is_some() {
            break;
        }
        net.poll(&mut host);
        peer.poll();
        server.serve(&mut peer);
        peer.poll();
    }
    assert_eq!(net.ipv4_address(), Some(DEVICE));
    let handle = peer.connect(50_000);
    let answer = exchange(&mut net, &mut host, &mut peer, handle, b"GET /no/such/page HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}
