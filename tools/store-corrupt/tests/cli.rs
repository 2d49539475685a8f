//! The corruption tool, run as a binary against real stores: its damage is what the store
//! then quarantines or sets aside, and the input is never touched.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use holdline_store::damage::RowDamage;
use holdline_store::{Binding, Provenance, Store, StoreOptions, Transport, Write};

const NOW: i64 = 1_900_000_000;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "holdline-corrupt-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn binding(i: usize) -> Binding {
    Binding {
        aor: format!("sip:{}@cloud.test", 1000 + i),
        contact: format!("<sip:{}@10.0.0.{}>", 1000 + i, i % 200 + 1),
        contact_uri: format!("sip:{}@10.0.0.{}", 1000 + i, i % 200 + 1),
        expires_at: NOW + 3600,
        call_id: format!("c{i}"),
        cseq: 1,
        source: format!("10.0.0.{}:5060", i % 200 + 1).parse().unwrap(),
        transport: Transport::Udp,
        instance_id: None,
        reg_id: None,
        provenance: Provenance::CloudVerified { at: NOW },
        last_seen: NOW,
        path: vec![],
    }
}

fn make_store(path: &Path, n: usize) {
    let (store, _) = Store::open(path, StoreOptions::default()).unwrap();
    store
        .commit_blocking((0..n).map(|i| Write::UpsertBinding(binding(i))).collect())
        .unwrap();
}

fn tool(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_holdline-store-corrupt"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_row_damage_kind_is_quarantined_with_its_reason() {
    let dir = TempDir::new("rows");
    let input = dir.0.join("in.db");
    let output = dir.0.join("out.db");
    make_store(&input, 300);
    let before = std::fs::read(&input).unwrap();
    let out = tool(&[
        s(&input),
        s(&output),
        "--damage",
        "all",
        "--percent",
        "1",
        "--seed",
        "7",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("on 3 row(s)").count(), 9, "{stdout}");
    assert_eq!(std::fs::read(&input).unwrap(), before, "input untouched");

    let (store, report) = Store::open(&output, StoreOptions::default()).unwrap();
    assert!(report.set_aside.is_none());
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.quarantined, 27);
    // 8 kinds x 3 rows are lost; the 3 duplicated rows keep their good copy.
    assert_eq!(loaded.items.len(), 300 - 24);
    let q = store.quarantine(100).unwrap();
    for kind in RowDamage::ALL {
        assert_eq!(
            q.iter()
                .filter(|r| r.reason.starts_with(kind.expected_reason()))
                .count(),
            3,
            "{kind:?}"
        );
    }
}

#[test]
fn same_seed_same_damage() {
    let dir = TempDir::new("seed");
    let input = dir.0.join("in.db");
    make_store(&input, 50);
    let a = tool(&[
        s(&input),
        s(&dir.0.join("a.db")),
        "--damage",
        "bad-uri",
        "--count",
        "4",
        "--seed",
        "3",
    ]);
    let b = tool(&[
        s(&input),
        s(&dir.0.join("b.db")),
        "--damage",
        "bad-uri",
        "--count",
        "4",
        "--seed",
        "3",
    ]);
    let tail = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(a.status.success() && b.status.success());
    assert_eq!(tail(&a), tail(&b));
}

#[test]
fn file_damage_makes_the_store_set_aside() {
    for kind in ["truncate", "torn-page", "garbage-header"] {
        let dir = TempDir::new(kind);
        let input = dir.0.join("in.db");
        let output = dir.0.join("out.db");
        make_store(&input, 300);
        let out = tool(&[s(&input), s(&output), "--file", kind]);
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (store, report) = Store::open(&output, StoreOptions::default()).unwrap();
        assert!(
            report.set_aside.is_some(),
            "{kind}: set aside; {}; {:?}",
            String::from_utf8_lossy(&out.stdout),
            store.check()
        );
        // The fresh store serves.
        store
            .commit_blocking(vec![Write::UpsertBinding(binding(999))])
            .unwrap();
    }
}

#[test]
fn refuses_to_overwrite_and_to_do_nothing() {
    let dir = TempDir::new("refuse");
    let input = dir.0.join("in.db");
    let output = dir.0.join("out.db");
    make_store(&input, 5);
    let none = tool(&[s(&input), s(&output)]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("nothing to do"));
    std::fs::write(&output, b"keep me").unwrap();
    let r = tool(&[s(&input), s(&output), "--damage", "duplicate"]);
    assert!(!r.status.success());
    assert_eq!(std::fs::read(&output).unwrap(), b"keep me");
    let r = tool(&[s(&input), s(&output), "--damage", "duplicate", "--force"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn help_documents_every_kind() {
    let out = tool(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for k in [
        "bad-uri",
        "bad-address",
        "expiry-out-of-range",
        "missing-field",
        "wrong-type",
        "bad-utf8",
        "checksum-mismatch",
        "duplicate",
        "bad-value",
        "truncate",
        "torn-page",
        "garbage-header",
    ] {
        assert!(help.contains(k), "--help lacks {k}");
    }
}

#[test]
fn an_unreadable_input_still_gets_file_damage_but_not_row_damage() {
    let dir = TempDir::new("unreadable");
    let input = dir.0.join("in.db");
    std::fs::write(&input, vec![0x5a; 8192]).unwrap();
    let out = tool(&[
        s(&input),
        s(&dir.0.join("a.db")),
        "--file",
        "garbage-header",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied the bytes"));
    let rows = tool(&[s(&input), s(&dir.0.join("b.db")), "--damage", "bad-uri"]);
    assert!(!rows.status.success());
    assert!(String::from_utf8_lossy(&rows.stderr).contains("copying"));
    let missing = tool(&[
        s(&dir.0.join("none.db")),
        s(&dir.0.join("c.db")),
        "--file",
        "truncate",
    ]);
    assert!(!missing.status.success());
}
