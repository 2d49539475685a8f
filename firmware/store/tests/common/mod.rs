#![allow(dead_code, clippy::unwrap_used)]
//! Shared helpers for the store's integration tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use holdline_store::{Binding, Provenance, Subscription, Transport};

pub const NOW: i64 = 1_900_000_000;

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "holdline-store-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn db(&self) -> PathBuf {
        self.0.join("holdline.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn binding(i: usize, expires_at: i64) -> Binding {
    let source: SocketAddr = format!("10.1.{}.{}:5060", (i / 250) % 250, i % 250 + 1)
        .parse()
        .unwrap();
    Binding {
        aor: format!("sip:{}@cloud.test", 1000 + i),
        contact: format!(
            "<sip:{}@10.1.0.{};transport=udp>;expires=3600",
            1000 + i,
            i % 250
        ),
        contact_uri: format!("sip:{}@10.1.0.{};transport=udp", 1000 + i, i % 250),
        expires_at,
        call_id: format!("call-{i}@phone"),
        cseq: 10 + i as u32,
        source,
        transport: if i.is_multiple_of(3) {
            Transport::Tcp
        } else {
            Transport::Udp
        },
        instance_id: i
            .is_multiple_of(2)
            .then(|| format!("<urn:uuid:00000000-0000-0000-0000-{i:012}>")),
        reg_id: i.is_multiple_of(2).then_some(1),
        provenance: if i.is_multiple_of(5) {
            Provenance::LocalOnly { at: NOW - 100 }
        } else {
            Provenance::CloudVerified { at: NOW - 50 }
        },
        last_seen: NOW - 10,
        path: vec!["<sip:holdline.local;lr>".to_owned()],
    }
}

pub fn subscription(i: usize, expires_at: i64) -> Subscription {
    Subscription {
        id: format!("sub-{i};ft;tt"),
        event: "dialog".into(),
        call_id: format!("sub-{i}@phone"),
        local_tag: "ft".into(),
        remote_tag: "tt".into(),
        watcher_aor: format!("sip:{}@cloud.test", 1000 + i),
        target_uri: format!("sip:{}@cloud.test", 2000 + i),
        remote_target: format!("sip:{}@10.1.0.1", 1000 + i),
        route_set: vec![
            "<sip:holdline.local;lr>".into(),
            "<sip:cloud.test;lr>".into(),
        ],
        local_cseq: 1,
        remote_cseq: 2,
        expires_at,
        last_version: Some(7),
        last_body: Some("<dialog-info/>\r\n".into()),
        last_content_type: Some("application/dialog-info+xml".into()),
        phone: "10.1.0.1:5060".parse().unwrap(),
        transport: Transport::Udp,
    }
}
