//! Sockets: UDP and TCP listeners per side, outbound TCP to peers, and the
//! events they feed into the daemon's loop. Nothing here decides anything
//! about SIP; bytes go to `holdline_core::Edge` unchanged.
//!
//! Transport errors become [`NetEvent::TransportError`] (the loop hands them
//! to `Edge::handle_transport_error`, evidence for the uplink monitor when
//! the peer is the cloud):
//! - UDP sends that fail (`EHOSTUNREACH`, `ENETUNREACH`, `EACCES`, ...);
//! - ICMP errors (port/host/net unreachable) for datagrams sent from a WAN
//!   UDP socket: Linux reports them for an unconnected socket only with
//!   `IP_RECVERR`/`IPV6_RECVERR`, queued on the socket's error queue with
//!   the original destination as the message's address; a task per WAN
//!   socket waits for error readiness and drains it (`MSG_ERRQUEUE`). Not on
//!   the LAN side: there a dead phone is no news about the cloud, and with
//!   `IP_RECVERR` the pending error fails the socket's next send once;
//! - TCP connects that fail and connections that end in an error (reset).
//!   An orderly close is not an error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use holdline_core::{Peer, Side, Transport};
use holdline_sip::framing::{self, Frame, StreamFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::limits::Limits;

/// Receive and send buffer asked for each UDP socket (the kernel caps it at
/// `net.core.rmem_max`/`wmem_max`): a burst of a few thousand datagrams
/// waits in the socket instead of being dropped by the kernel while the
/// loop is busy.
const UDP_BUFFER: usize = 4 * 1024 * 1024;
/// Datagrams at most waiting for socket room per UDP socket; beyond this
/// they are dropped (and logged) rather than held without bound.
const MAX_UDP_BACKLOG: usize = 8192;

/// The limiters, shared by every reader task (all on the loop's thread).
pub type SharedLimits = Arc<Mutex<Limits>>;

/// One UDP socket and its ordered send backlog. A datagram that finds the
/// socket buffer full goes to a writer task; while that task has anything
/// queued, later datagrams queue behind it, so that messages leave in the
/// order the loop sent them (a 180 must never overtake the 200 after it).
struct UdpOut {
    side: Side,
    socket: Arc<UdpSocket>,
    backlog: mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>,
    queued: Arc<AtomicUsize>,
    events: mpsc::Sender<NetEvent>,
}

/// An error that an earlier ICMP message left pending on a socket with
/// `IP_RECVERR`: the kernel fails the next send with it once (that
/// datagram is not sent) and the error queue reports the ICMP itself.
fn pending_icmp_error(e: &std::io::Error) -> bool {
    use nix::libc;
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN)
    )
}

/// A send error that says something about the path to the peer (not a
/// full buffer, not a datagram too large for the path).
fn is_transport_error(e: &std::io::Error) -> bool {
    use nix::libc;
    e.kind() != std::io::ErrorKind::WouldBlock
        && e.kind() != std::io::ErrorKind::Interrupted
        && e.raw_os_error() != Some(libc::EMSGSIZE)
}

/// Reports a failed send to the loop (without waiting: when the channel is
/// full the loop has plenty of other evidence to read).
fn report(events: &mpsc::Sender<NetEvent>, side: Side, to: Peer, error: &std::io::Error) {
    debug!(%side, %to, %error, "transport error");
    let _ = events.try_send(NetEvent::TransportError {
        side,
        to,
        error: error.to_string(),
    });
}

/// Sends one datagram from the writer task: a pending ICMP error fails
/// the first try (nothing was sent), so it is tried once more.
async fn send_queued(s: &UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    match s.send_to(bytes, to).await {
        Err(e) if pending_icmp_error(&e) => s.send_to(bytes, to).await,
        r => r,
    }
}

impl UdpOut {
    fn new(side: Side, socket: Arc<UdpSocket>, events: mpsc::Sender<NetEvent>) -> UdpOut {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, SocketAddr)>();
        let queued = Arc::new(AtomicUsize::new(0));
        let (s, q, ev) = (Arc::clone(&socket), Arc::clone(&queued), events.clone());
        tokio::spawn(async move {
            while let Some((bytes, to)) = rx.recv().await {
                if let Err(e) = send_queued(&s, &bytes, to).await {
                    if is_transport_error(&e) {
                        report(&ev, side, udp_peer(to), &e);
                    } else {
                        debug!(%to, error = %e, "udp send failed");
                    }
                }
                q.fetch_sub(1, Ordering::AcqRel);
            }
        });
        UdpOut {
            side,
            socket,
            backlog: tx,
            queued,
            events,
        }
    }

    fn send(&self, bytes: Vec<u8>, to: SocketAddr) {
        let queued = self.queued.load(Ordering::Acquire);
        if queued == 0 {
            let mut sent = self.socket.try_send_to(&bytes, to);
            if sent.as_ref().is_err_and(pending_icmp_error) {
                // Left by an earlier ICMP (reported by the error queue);
                // this datagram did not go: once more.
                sent = self.socket.try_send_to(&bytes, to);
            }
            match sent {
                Ok(_) => return,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if is_transport_error(&e) => {
                    report(&self.events, self.side, udp_peer(to), &e);
                    return;
                }
                Err(e) => {
                    debug!(%to, error = %e, "udp send failed");
                    return;
                }
            }
        } else if queued >= MAX_UDP_BACKLOG {
            warn!(%to, queued, "udp send backlog full; message dropped");
            return;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.backlog.send((bytes, to)).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn udp_peer(addr: SocketAddr) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr,
    }
}

/// Asks the kernel to queue ICMP errors for this socket's datagrams on its
/// error queue (`IP_RECVERR` / `IPV6_RECVERR`).
fn enable_recverr(s: &UdpSocket, v6: bool) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let r = if v6 {
        setsockopt(s, sockopt::Ipv6RecvErr, &true)
    } else {
        setsockopt(s, sockopt::Ipv4RecvErr, &true)
    };
    r.map_err(std::io::Error::from)
}

/// One entry of a socket's error queue: the destination of the datagram
/// that drew an ICMP error, and the error, when it says the peer cannot be
/// reached. `Ok(None)`: an entry that does not (e.g. "fragmentation
/// needed"). `WouldBlock` when the queue is empty.
fn read_error_queue(s: &UdpSocket) -> std::io::Result<Option<(SocketAddr, std::io::Error)>> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    use nix::libc;
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};

    // The start of the offending datagram comes back too; it is not needed.
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let dest = msg.address.as_ref().and_then(|a| {
        if let Some(v4) = a.as_sockaddr_in() {
            Some(SocketAddr::V4((*v4).into()))
        } else {
            a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
        }
    });
    let mut errno = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _) => {
                let icmp = e.ee_origin == libc::SO_EE_ORIGIN_ICMP
                    || e.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
                if icmp {
                    errno = i32::try_from(e.ee_errno).ok();
                }
            }
            _ => {}
        }
    }
    let unreachable = errno.filter(|n| {
        matches!(
            *n,
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENETDOWN
                | libc::EACCES
                | libc::EPROTO
        )
    });
    Ok(match (dest, unreachable) {
        (Some(d), Some(n)) => Some((d, std::io::Error::from_raw_os_error(n))),
        _ => None,
    })
}

/// Drains the error queue of a WAN UDP socket as ICMP errors arrive and
/// reports each unreachable destination to the loop.
async fn udp_errors(side: Side, s: Arc<UdpSocket>, events: mpsc::Sender<NetEvent>) {
    loop {
        match s.async_io(Interest::ERROR, || read_error_queue(&s)).await {
            Ok(Some((to, error))) => {
                debug!(%side, %to, %error, "ICMP error");
                let ev = NetEvent::TransportError {
                    side,
                    to: udp_peer(to),
                    error: error.to_string(),
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                // Not expected; do not spin on it.
                debug!(%side, error = %e, "error queue read failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// A UDP socket bound to `addr` with large buffers.
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works.
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Asks the limiters whether a message may go on to the loop.
fn admitted(limits: &SharedLimits, side: Side, from: SocketAddr, bytes: &[u8]) -> bool {
    match limits.lock() {
        Ok(mut l) => l.admit(Instant::now(), side, from.ip(), bytes),
        // A poisoned lock means a panic elsewhere; do not limit then.
        Err(_) => true,
    }
}

/// Longest a TCP connect may take before it counts as a transport error
/// (the kernel's own SYN retries last about two minutes; a phone or cloud
/// that does not answer by now is not there, and the request waiting for
/// the connection is answered by the edge instead).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

/// What the sockets tell the loop.
pub enum NetEvent {
    /// A message (datagram, or one framed out of a stream).
    Message {
        /// Side it arrived on.
        side: Side,
        /// Sender.
        from: Peer,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// A TCP connection is up (accepted or connected); send through `tx`.
    TcpUp {
        /// Side.
        side: Side,
        /// Remote address.
        peer: SocketAddr,
        /// Writer.
        tx: mpsc::Sender<Vec<u8>>,
    },
    /// A TCP connection closed or failed.
    TcpDown {
        /// Side.
        side: Side,
        /// Remote address.
        peer: SocketAddr,
    },
    /// Sending to `to` failed at the transport (send error, ICMP error,
    /// TCP connect failure or reset).
    TransportError {
        /// Side it was sent from.
        side: Side,
        /// Where it was going.
        to: Peer,
        /// What the OS said.
        error: String,
    },
}

/// Outgoing side of the sockets, owned by the loop.
pub struct Net {
    udp: HashMap<Side, UdpOut>,
    tcp: HashMap<(Side, SocketAddr), mpsc::Sender<Vec<u8>>>,
    connecting: HashMap<(Side, SocketAddr), Vec<Vec<u8>>>,
    events: mpsc::Sender<NetEvent>,
    max_message: usize,
    limits: SharedLimits,
}

/// Binds every listener; errors name the endpoint. Requests over their
/// source's rate (`limits`) are dropped before they reach the loop.
pub async fn bind(
    lan: &[Peer],
    wan: &[Peer],
    events: mpsc::Sender<NetEvent>,
    max_message: usize,
    limits: Limits,
) -> Result<Net, String> {
    let limits: SharedLimits = Arc::new(Mutex::new(limits));
    let mut net = Net {
        udp: HashMap::new(),
        tcp: HashMap::new(),
        connecting: HashMap::new(),
        events: events.clone(),
        max_message,
        limits: Arc::clone(&limits),
    };
    for (side, list) in [(Side::Lan, lan), (Side::Wan, wan)] {
        for p in list {
            match p.transport {
                Transport::Udp => {
                    let s = udp_socket(p.addr)
                        .map_err(|e| format!("cannot listen on {side} {p}: {e}"))?;
                    let s = Arc::new(s);
                    if side == Side::Wan {
                        // ICMP errors from the cloud: evidence for the uplink.
                        match enable_recverr(&s, p.addr.is_ipv6()) {
                            Ok(()) => {
                                tokio::spawn(udp_errors(side, Arc::clone(&s), events.clone()));
                            }
                            Err(e) => warn!(%side, %p, error = %e, "ICMP errors will not be seen"),
                        }
                    }
                    net.udp
                        .entry(side)
                        .or_insert_with(|| UdpOut::new(side, Arc::clone(&s), events.clone()));
                    tokio::spawn(udp_reader(
                        side,
                        s,
                        events.clone(),
                        max_message,
                        Arc::clone(&limits),
                    ));
                }
                Transport::Tcp => {
                    let l = TcpListener::bind(p.addr)
                        .await
                        .map_err(|e| format!("cannot listen on {side} {p}: {e}"))?;
                    tokio::spawn(tcp_acceptor(
                        side,
                        l,
                        events.clone(),
                        max_message,
                        Arc::clone(&limits),
                    ));
                }
            }
        }
    }
    Ok(net)
}

async fn udp_reader(
    side: Side,
    s: Arc<UdpSocket>,
    events: mpsc::Sender<NetEvent>,
    max: usize,
    limits: SharedLimits,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match s.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let bytes = buf.get(..n).unwrap_or_default();
                match framing::datagram(bytes, max) {
                    Ok(Frame::Message(m)) if !admitted(&limits, side, from, &m) => {}
                    Ok(Frame::Message(m)) => {
                        let ev = NetEvent::Message {
                            side,
                            from: Peer {
                                transport: Transport::Udp,
                                addr: from,
                            },
                            bytes: m,
                        };
                        if events.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(Frame::Ping) => {
                        let _ = s.send_to(framing::PONG, from).await;
                    }
                    Ok(Frame::Pong) => {}
                    Err(e) => debug!(%side, %from, error = %e, "datagram dropped"),
                }
            }
            Err(e) => {
                // An ICMP error pending on a WAN socket surfaces here once
                // (the error-queue task reports it); keep going.
                debug!(%side, error = %e, "udp receive error");
            }
        }
    }
}

async fn tcp_acceptor(
    side: Side,
    l: TcpListener,
    events: mpsc::Sender<NetEvent>,
    max: usize,
    limits: SharedLimits,
) {
    loop {
        match l.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(tcp_conn(
                    side,
                    stream,
                    peer,
                    events.clone(),
                    max,
                    Vec::new(),
                    Arc::clone(&limits),
                ));
            }
            Err(e) => {
                warn!(%side, error = %e, "tcp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one TCP connection: announces it, reads frames, writes what the loop sends.
async fn tcp_conn(
    side: Side,
    stream: TcpStream,
    peer: SocketAddr,
    events: mpsc::Sender<NetEvent>,
    max: usize,
    first: Vec<Vec<u8>>,
    limits: SharedLimits,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    if events
        .send(NetEvent::TcpUp {
            side,
            peer,
            tx: tx.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        for m in first {
            if wr.write_all(&m).await.is_err() {
                return;
            }
        }
        while let Some(m) = rx.recv().await {
            if wr.write_all(&m).await.is_err() {
                return;
            }
        }
    });
    let mut framer = StreamFramer::new(max);
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => break,
            Err(e) => {
                // A reset: the peer's end failed (an orderly close is not).
                let to = Peer {
                    transport: Transport::Tcp,
                    addr: peer,
                };
                debug!(%side, %to, error = %e, "tcp connection failed");
                let _ = events
                    .send(NetEvent::TransportError {
                        side,
                        to,
                        error: e.to_string(),
                    })
                    .await;
                break;
            }
            Ok(n) => n,
        };
        if framer.push(buf.get(..n).unwrap_or_default()).is_err() {
            break;
        }
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(m))) if !admitted(&limits, side, peer, &m) => {}
                Ok(Some(Frame::Message(m))) => {
                    let ev = NetEvent::Message {
                        side,
                        from: Peer {
                            transport: Transport::Tcp,
                            addr: peer,
                        },
                        bytes: m,
                    };
                    if events.send(ev).await.is_err() {
                        break 'read;
                    }
                }
                Ok(Some(Frame::Ping)) => {
                    let _ = tx.send(framing::PONG.to_vec()).await;
                }
                Ok(Some(Frame::Pong)) => {}
                Ok(None) => break,
                Err(e) => {
                    debug!(%side, %peer, error = %e, "closing stream");
                    break 'read;
                }
            }
        }
    }
    drop(tx);
    writer.abort();
    let _ = events.send(NetEvent::TcpDown { side, peer }).await;
}

impl Net {
    /// Sends a message from `side` to `to`. Over TCP: the open connection to
    /// that address, else a new one (messages queue while it connects).
    pub fn send(&mut self, side: Side, to: Peer, bytes: Vec<u8>) {
        match to.transport {
            Transport::Udp => {
                let Some(s) = self.udp.get(&side).or_else(|| self.udp.values().next()) else {
                    debug!(%side, %to, "no UDP socket for this side");
                    return;
                };
                // Sent at once when the socket buffer has room (the usual case);
                // otherwise queued in order behind what already waits.
                s.send(bytes, to.addr);
            }
            Transport::Tcp => {
                let key = (side, to.addr);
                if let Some(tx) = self.tcp.get(&key) {
                    if tx.try_send(bytes).is_err() {
                        debug!(%to, "tcp writer full or closed; message dropped");
                    }
                    return;
                }
                if let Some(q) = self.connecting.get_mut(&key) {
                    q.push(bytes);
                    return;
                }
                self.connecting.insert(key, Vec::new());
                let events = self.events.clone();
                let max = self.max_message;
                let limits = Arc::clone(&self.limits);
                tokio::spawn(async move {
                    let connect =
                        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to.addr));
                    let res = match connect.await {
                        Ok(r) => r,
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "tcp connect timed out",
                        )),
                    };
                    match res {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            tcp_conn(side, s, to.addr, events, max, vec![bytes], limits).await;
                        }
                        Err(e) => {
                            debug!(%to, error = %e, "tcp connect failed");
                            let _ = events
                                .send(NetEvent::TransportError {
                                    side,
                                    to,
                                    error: e.to_string(),
                                })
                                .await;
                            let _ = events
                                .send(NetEvent::TcpDown {
                                    side,
                                    peer: to.addr,
                                })
                                .await;
                        }
                    }
                });
            }
        }
    }

    /// A connection came up: remember it and flush what queued while connecting.
    pub fn tcp_up(&mut self, side: Side, peer: SocketAddr, tx: mpsc::Sender<Vec<u8>>) {
        if let Some(q) = self.connecting.remove(&(side, peer)) {
            for m in q {
                let _ = tx.try_send(m);
            }
        }
        self.tcp.insert((side, peer), tx);
    }

    /// A connection went away.
    pub fn tcp_down(&mut self, side: Side, peer: SocketAddr) {
        self.tcp.remove(&(side, peer));
        self.connecting.remove(&(side, peer));
    }

    /// Open TCP connections.
    pub fn tcp_count(&self) -> usize {
        self.tcp.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback UDP port where nothing listens (bound, then closed).
    fn closed_port() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr")
    }

    #[tokio::test]
    async fn icmp_port_unreachable_is_read_from_the_error_queue_with_its_destination() {
        let s = udp_socket("127.0.0.1:0".parse().expect("addr")).expect("socket");
        enable_recverr(&s, false).expect("IP_RECVERR");
        let closed = closed_port();
        s.send_to(b"OPTIONS", closed).await.expect("sent");
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.async_io(Interest::ERROR, || read_error_queue(&s)),
        )
        .await
        .expect("an ICMP error within 10 s")
        .expect("error queue read");
        let (to, error) = got.expect("port unreachable is reported");
        assert_eq!(to, closed);
        assert_eq!(error.raw_os_error(), Some(nix::libc::ECONNREFUSED));
        // Drained: nothing more, and the next send goes (nothing pending).
        assert_eq!(
            read_error_queue(&s).map_err(|e| e.kind()).err(),
            Some(std::io::ErrorKind::WouldBlock)
        );
        s.send_to(b"OPTIONS", closed_port()).await.expect("sent");
    }

    #[tokio::test]
    async fn a_datagram_sent_while_an_icmp_error_is_pending_still_leaves() {
        let s = Arc::new(udp_socket("127.0.0.1:0".parse().expect("addr")).expect("socket"));
        enable_recverr(&s, false).expect("IP_RECVERR");
        let (tx, _rx) = mpsc::channel(64);
        let out = UdpOut::new(Side::Wan, Arc::clone(&s), tx);
        out.send(b"to nobody".to_vec(), closed_port());
        // The ICMP error has arrived (error readiness), nobody drained it.
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.async_io(Interest::ERROR, || Ok(())),
        )
        .await
        .expect("an ICMP error within 10 s")
        .expect("readiness");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        out.send(b"to the peer".to_vec(), peer.local_addr().expect("addr"));
        let mut buf = [0u8; 64];
        let (n, _) = peer.recv_from(&mut buf).expect("the datagram arrives");
        assert_eq!(buf.get(..n), Some(&b"to the peer"[..]));
    }

    #[tokio::test]
    async fn a_wan_send_to_a_closed_port_and_a_refused_tcp_connect_are_transport_errors() {
        let cfg = crate::config::Config::parse("", std::path::Path::new("t.toml")).expect("cfg");
        let (tx, mut rx) = mpsc::channel(64);
        let wan = [Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:0".parse().expect("addr"),
        }];
        let mut net = bind(&[], &wan, tx, 65_535, Limits::from_config(&cfg))
            .await
            .expect("bound");
        let mut want = vec![
            Peer {
                transport: Transport::Udp,
                addr: closed_port(),
            },
            Peer {
                transport: Transport::Tcp,
                addr: {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                    l.local_addr().expect("addr")
                },
            },
        ];
        for p in &want {
            net.send(Side::Wan, *p, b"OPTIONS sip:x SIP/2.0\r\n\r\n".to_vec());
        }
        let mut seen = Vec::new();
        while seen.len() < want.len() {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("events within 10 s")
                .expect("channel open");
            match ev {
                NetEvent::TransportError { side, to, .. } => {
                    assert_eq!(side, Side::Wan);
                    seen.push(to);
                }
                NetEvent::TcpDown { .. } => {}
                _ => panic!("unexpected event"),
            }
        }
        let key = |p: &Peer| (p.transport == Transport::Tcp, p.addr);
        seen.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(seen, want);
    }
}
