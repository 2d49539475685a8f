//! Make a store with N realistic bindings (for benchmarks and manual tests of the daemon):
//!
//!     cargo run --release -p holdline-store --example fill -- OUT.db 100000 [EXPIRES_IN_S [FIRST_OCTET]]
//!
//! Bindings `sip:<100000+i>@cloud.test`, verified by the cloud, expiring EXPIRES_IN_S
//! (default 3600) from now, 10 % of them already expired, phones' addresses
//! `FIRST_OCTET.a.b.c:5060` (default 10; 127 keeps anything the daemon might send them on
//! loopback, for benchmarks on a shared machine). Damage can then be added with
//! `holdline-store-corrupt`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use holdline_store::{Binding, Provenance, Store, StoreOptions, Transport, Write};

fn binding(i: usize, now: i64, expires_at: i64, first_octet: u8) -> Result<Binding, String> {
    let source: SocketAddr = format!(
        "{first_octet}.{}.{}.{}:5060",
        i / 62_500,
        (i / 250) % 250,
        i % 250 + 1
    )
    .parse()
    .map_err(|e| format!("address: {e}"))?;
    Ok(Binding {
        aor: format!("sip:{}@cloud.test", 100_000 + i),
        contact: format!(
            "<sip:{}@{source};transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-{i:012}>\";reg-id=1",
            100_000 + i
        ),
        contact_uri: format!("sip:{}@{source};transport=udp", 100_000 + i),
        expires_at,
        call_id: format!("{i:08x}-fill@10.0.0.1"),
        cseq: 1,
        source,
        transport: Transport::Udp,
        instance_id: Some(format!("<urn:uuid:00000000-0000-0000-0000-{i:012}>")),
        reg_id: Some(1),
        provenance: Provenance::CloudVerified { at: now - 60 },
        last_seen: now - 30,
        path: vec!["<sip:holdline.site.local;lr>".to_owned()],
    })
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(n)) = (args.first(), args.get(1)) else {
        return Err("usage: fill OUT.db N [EXPIRES_IN_S [FIRST_OCTET]]".into());
    };
    let n: usize = n.parse().map_err(|e| format!("N: {e}"))?;
    let expires_in: i64 = match args.get(2) {
        Some(s) => s.parse().map_err(|e| format!("EXPIRES_IN_S: {e}"))?,
        None => 3600,
    };
    let first_octet: u8 = match args.get(3) {
        Some(s) => s.parse().map_err(|e| format!("FIRST_OCTET: {e}"))?,
        None => 10,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let (store, _) =
        Store::open(out.as_ref(), StoreOptions::default()).map_err(|e| e.to_string())?;
    let mut i = 0;
    while i < n {
        let end = (i + 2000).min(n);
        let mut writes = Vec::with_capacity(end - i);
        for k in i..end {
            let exp = if k % 10 == 0 {
                now - 1
            } else {
                now + expires_in
            };
            writes.push(Write::UpsertBinding(binding(k, now, exp, first_octet)?));
        }
        store.commit_blocking(writes).map_err(|e| e.to_string())?;
        i = end;
    }
    println!("{out}: {n} bindings");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fill: {e}");
            ExitCode::FAILURE
        }
    }
}
