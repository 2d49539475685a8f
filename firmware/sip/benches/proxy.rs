//! Messages per second through the sans-IO core (parse + route + serialize)
//! for a typical REGISTER and INVITE, and bytes allocated per message, on
//! one core. Prints figures; asserts nothing about speed.
//!
//! Run: `cargo bench -p holdline-sip --bench proxy`

use std::alloc::{GlobalAlloc, Layout, System};
use std::error::Error;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use holdline_sip::inbound::{classify, Inbound};
use holdline_sip::proxy::{Leg, ProxyIdentity};
use holdline_sip::transaction::Transport;
use holdline_sip::Message;

struct Counting;

static BYTES: AtomicU64 = AtomicU64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are plain atomics and do not touch the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's: layout is valid, non-zero size.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was returned by System.alloc/realloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: ptr/layout come from this allocator; new_size is non-zero.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REGISTER: &[u8] = b"REGISTER sip:cloud.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:100@cloud.test>;tag=49583\r\n\
To: <sip:100@cloud.test>\r\n\
Call-ID: 843817637684230@10.0.0.5\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:100@10.0.0.5:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\r\n\
Expires: 3600\r\n\
Supported: path, outbound, gruu\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, UPDATE, SUBSCRIBE, MESSAGE, INFO\r\n\
User-Agent: Deskphone/4.2.1\r\n\
Authorization: Digest username=\"100\", realm=\"cloud.test\", nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\", uri=\"sip:cloud.test\", response=\"dfe56131d1958046689d83306477ecc\", algorithm=MD5\r\n\
Content-Length: 0\r\n\r\n";

const INVITE: &[u8] = b"INVITE sip:200@cloud.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK74bf9;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Desk 100\" <sip:100@cloud.test>;tag=9fxced76sl\r\n\
To: <sip:200@cloud.test>\r\n\
Call-ID: 3848276298220188511@10.0.0.5\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:100@10.0.0.5:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
User-Agent: Deskphone/4.2.1\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 232\r\n\r\n\
v=0\r\n\
o=100 2890844526 2890844526 IN IP4 10.0.0.5\r\n\
s=-\r\n\
c=IN IP4 10.0.0.5\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n";

struct Ctx {
    id: ProxyIdentity,
    lan: Leg,
    wan: Leg,
    src: SocketAddr,
}

/// One proxied request: classify (parse + validate), preprocess
/// (received/rport, Max-Forwards, loop check, Route), Path or Record-Route,
/// forward (Via with branch), serialize.
fn proxy_request(ctx: &Ctx, bytes: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let Inbound::Message(msg) = classify(bytes, 65_000) else {
        return None;
    };
    let mut req = *msg;
    let branch = ctx.id.branch(&req, 0);
    ctx.id.preprocess(&mut req, ctx.src, &[]).ok()?;
    if req.cseq()?.method == holdline_sip::Method::Register {
        ctx.id.add_path(&mut req, &ctx.wan, "").ok()?;
    } else {
        ctx.id.record_route(&mut req, &ctx.lan, &ctx.wan, "").ok()?;
    }
    ctx.id
        .forward_with_branch(&mut req, &ctx.wan, &branch)
        .ok()?;
    out.clear();
    req.write_to(out);
    Some(out.len())
}

/// One proxied response: parse, pop our Via, target by the next Via, serialize.
fn proxy_response(ctx: &Ctx, bytes: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let Inbound::Message(msg) = classify(bytes, 65_000) else {
        return None;
    };
    let mut resp = *msg;
    let target = ctx.id.route_response(&mut resp).ok()?;
    black_box(target);
    out.clear();
    resp.write_to(out);
    Some(out.len())
}

/// Nanoseconds this thread has run on a CPU (Linux schedstat), so that the
/// figure is per core even when the machine is shared and we get descheduled.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn run(name: &str, n: u64, mut f: impl FnMut() -> Option<usize>) -> Result<(), Box<dyn Error>> {
    // Warm up.
    for _ in 0..n / 10 {
        f().ok_or("warm-up message not proxied")?;
    }
    let b0 = BYTES.load(Ordering::Relaxed);
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let c0 = thread_cpu_ns();
    let t0 = Instant::now();
    for _ in 0..n {
        black_box(f().ok_or("message not proxied")?);
    }
    let dt = t0.elapsed();
    let cpu = match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
        _ => None,
    };
    let bytes = BYTES.load(Ordering::Relaxed) - b0;
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    let rate = n as f64 / dt.as_secs_f64();
    let cpu_rate = cpu.map_or(0.0, |c| n as f64 / c);
    println!(
        "{name:<28} {cpu_rate:>9.0} msg/s per CPU-second  {rate:>9.0} msg/s wall  {:>6.2} us/msg wall  {:>5} bytes allocated/msg  {:>4.1} allocations/msg",
        dt.as_secs_f64() * 1e6 / n as f64,
        bytes / n,
        allocs as f64 / n as f64
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let lan = Leg::new(SocketAddr::from(([127, 0, 0, 1], 5060)), Transport::Udp);
    let wan = Leg::new(SocketAddr::from(([127, 0, 0, 1], 5070)), Transport::Udp);
    let ctx = Ctx {
        id: ProxyIdentity::new(vec![lan.clone(), wan.clone()], 0x5eed),
        lan,
        wan,
        src: SocketAddr::from(([10, 0, 0, 5], 40000)),
    };
    // The cloud's 200 OK for the INVITE as it comes back through us.
    let mut fwd = Vec::new();
    proxy_request(&ctx, INVITE, &mut fwd).ok_or("INVITE not proxied")?;
    let at_cloud = Message::parse(&fwd)?;
    let ok = Message::response_for(&at_cloud, 200, "OK")?.to_bytes();

    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    println!(
        "holdline-sip proxy core, one thread, {n} messages each (REGISTER {} B, INVITE {} B, 200 OK {} B)",
        REGISTER.len(),
        INVITE.len(),
        ok.len()
    );
    let mut out = Vec::with_capacity(4096);
    run("REGISTER parse+route+ser", n, || {
        proxy_request(&ctx, REGISTER, &mut out)
    })?;
    run("INVITE parse+route+ser", n, || {
        proxy_request(&ctx, INVITE, &mut out)
    })?;
    run("200 OK (INVITE) response", n, || {
        proxy_response(&ctx, &ok, &mut out)
    })?;
    run("parse+validate INVITE only", n, || {
        Message::parse(INVITE).ok().map(|m| m.header_count())
    })?;
    Ok(())
}
