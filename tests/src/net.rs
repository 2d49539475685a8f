//! Loopback addresses for tests that run in parallel, and port checks.
//!
//! Each test takes a [`Block`]: its own `127.A.B.0/24`. The block is claimed by
//! binding a UDP socket on `127.A.B.254:65534` and holding it for the block's
//! life, so two tests (threads or processes) can never get the same block.
//! Linux answers on all of 127.0.0.0/8 without configuration.
//!
//! Conventional hosts inside a block: `.1` holdline, `.2` the cloud, `.3` the
//! backup route, `.4` a trunk the cloud trusts, `.5` an edge proxy, `.10+` phones.
//! Nothing here resolves a name.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Port of the claim socket on `.254` of every block.
const CLAIM_PORT: u16 = 65534;

/// A `127.A.B.0/24` block owned by one test until dropped.
#[derive(Debug)]
pub struct Block {
    a: u8,
    b: u8,
    _claim: UdpSocket,
}

impl Block {
    /// Claims a free block. The search starts at a point derived from the
    /// process id and a counter, so parallel tests rarely probe the same
    /// candidates; a block whose SIP ports (5060 on .1–.5) are taken by a
    /// stray process is skipped.
    ///
    /// # Panics
    /// When no block out of 60 000 is free (it never happens in practice).
    pub fn allocate() -> Block {
        Self::try_allocate().expect("no free 127.A.B.0/24 loopback block")
    }

    /// Like [`Block::allocate`], returning an error instead of panicking.
    pub fn try_allocate() -> io::Result<Block> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // A = 20..=249, B = 0..=255: 57 600 blocks.
        const SPAN: u32 = 230 * 256;
        let start = (std::process::id().wrapping_mul(7919) + n.wrapping_mul(104_729)) % SPAN;
        for i in 0..SPAN {
            let idx = (start + i) % SPAN;
            let a = 20 + (idx / 256) as u8;
            let b = (idx % 256) as u8;
            let claim = SocketAddrV4::new(Ipv4Addr::new(127, a, b, 254), CLAIM_PORT);
            let Ok(sock) = UdpSocket::bind(claim) else {
                continue;
            };
            let clean = (1..=5).all(|h| {
                let ip = Ipv4Addr::new(127, a, b, h);
                udp_port_free(ip, 5060) && tcp_port_free(ip, 5060)
            });
            if clean {
                return Ok(Block { a, b, _claim: sock });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "every 127.A.B.0/24 block is taken",
        ))
    }

    /// `127.A.B.host`.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.a, self.b, host)
    }

    /// `.1`: holdline (LAN and WAN listeners on different ports).
    pub fn holdline(&self) -> Ipv4Addr {
        self.ip(1)
    }

    /// `.2`: the cloud (Kamailio).
    pub fn cloud(&self) -> Ipv4Addr {
        self.ip(2)
    }

    /// `.3`: the backup route (PSTN gateway / backup trunk).
    pub fn backup(&self) -> Ipv4Addr {
        self.ip(3)
    }

    /// `.4`: a trunk that the cloud does not challenge (inbound calls).
    pub fn trunk(&self) -> Ipv4Addr {
        self.ip(4)
    }

    /// `.5`: an edge proxy (Kamailio as a plain stateful proxy, for benchmarks).
    pub fn edge(&self) -> Ipv4Addr {
        self.ip(5)
    }

    /// Phone `i` (0-based): `.10 + i`, up to 200 phones' addresses.
    ///
    /// # Panics
    /// When `i >= 200`.
    pub fn phone(&self, i: u8) -> Ipv4Addr {
        assert!(i < 200, "phone index {i} out of the block");
        self.ip(10 + i)
    }

    /// `127.A.B` (for log messages).
    pub fn prefix(&self) -> String {
        format!("127.{}.{}", self.a, self.b)
    }
}

/// True when a UDP socket can bind `ip:port` now.
pub fn udp_port_free(ip: Ipv4Addr, port: u16) -> bool {
    UdpSocket::bind(SocketAddrV4::new(ip, port)).is_ok()
}

/// True when a TCP listener can bind `ip:port` now.
pub fn tcp_port_free(ip: Ipv4Addr, port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(ip, port)).is_ok()
}

/// A port on `ip` free for both UDP and TCP right now (asked from the
/// kernel's ephemeral range, so it does not collide with fixed SIP ports).
pub fn free_port(ip: Ipv4Addr) -> io::Result<u16> {
    for _ in 0..100 {
        let tcp = TcpListener::bind(SocketAddrV4::new(ip, 0))?;
        let port = tcp.local_addr()?.port();
        if udp_port_free(ip, port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no port free for both UDP and TCP on {ip}"),
    ))
}

/// Polls until `addr` accepts a TCP connection or `timeout` passes.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one SIP OPTIONS over UDP from `from_ip` (ephemeral port) to `to` and
/// returns the status code of the first response, waiting up to `timeout`
/// (retransmitting every 250 ms).
pub fn sip_options(from_ip: Ipv4Addr, to: SocketAddr, timeout: Duration) -> io::Result<u16> {
    static BRANCH: AtomicU32 = AtomicU32::new(0);
    let sock = UdpSocket::bind(SocketAddrV4::new(from_ip, 0))?;
    let local = sock.local_addr()?;
    let n = BRANCH.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let msg = format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-rig-{pid}-{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:rig@{local}>;tag=rig{pid}x{n}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: rig-options-{pid}-{n}@{local}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.set_read_timeout(Some(Duration::from_millis(250)))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65535];
    loop {
        sock.send_to(msg.as_bytes(), to)?;
        match sock.recv_from(&mut buf) {
            Ok((len, _)) => {
                let text = String::from_utf8_lossy(&buf[..len]);
                let code = text
                    .strip_prefix("SIP/2.0 ")
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse::<u16>().ok());
                if let Some(code) = code {
                    if code >= 200 {
                        return Ok(code);
                    }
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            }
            // ICMP port unreachable: nobody listens yet.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer to OPTIONS from {to}"),
            ));
        }
    }
}
