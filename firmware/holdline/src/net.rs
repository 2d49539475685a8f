//! Sockets: UDP and TCP listeners per side, outbound TCP to peers, and the
//! events they feed into the daemon's loop. Nothing here decides anything
//! about SIP; bytes go to `holdline_core::Edge` unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use holdline_core::{Peer, Side, Transport};
use holdline_sip::framing::{self, Frame, StreamFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    socket: Arc<UdpSocket>,
    backlog: mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>,
    queued: Arc<AtomicUsize>,
}

impl UdpOut {
    fn new(socket: Arc<UdpSocket>) -> UdpOut {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, SocketAddr)>();
        let queued = Arc::new(AtomicUsize::new(0));
        let (s, q) = (Arc::clone(&socket), Arc::clone(&queued));
        tokio::spawn(async move {
            while let Some((bytes, to)) = rx.recv().await {
                if let Err(e) = s.send_to(&bytes, to).await {
                    debug!(%to, error = %e, "udp send failed");
                }
                q.fetch_sub(1, Ordering::AcqRel);
            }
        });
        UdpOut {
            socket,
            backlog: tx,
            queued,
        }
    }

    fn send(&self, bytes: Vec<u8>, to: SocketAddr) {
        let queued = self.queued.load(Ordering::Acquire);
        if queued == 0 {
            match self.socket.try_send_to(&bytes, to) {
                Ok(_) => return,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
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
                    net.udp
                        .entry(side)
                        .or_insert_with(|| UdpOut::new(Arc::clone(&s)));
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
                // ICMP port unreachable and friends surface here on Linux; keep going.
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
            Ok(0) | Err(_) => break,
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
                    match TcpStream::connect(to.addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            tcp_conn(side, s, to.addr, events, max, vec![bytes], limits).await;
                        }
                        Err(e) => {
                            debug!(%to, error = %e, "tcp connect failed");
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
