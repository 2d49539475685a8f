//! Mapping between the core's records and the store's rows.

use holdline_core as core;
use holdline_store as store;

fn t_to_store(t: core::Transport) -> store::Transport {
    match t {
        core::Transport::Udp => store::Transport::Udp,
        core::Transport::Tcp => store::Transport::Tcp,
    }
}

fn t_from_store(t: store::Transport) -> core::Transport {
    match t {
        store::Transport::Udp => core::Transport::Udp,
        store::Transport::Tcp => core::Transport::Tcp,
    }
}

/// Core binding → store row.
pub fn binding_to_store(b: core::Binding) -> store::Binding {
    store::Binding {
        aor: b.aor,
        contact: b.contact,
        contact_uri: b.contact_uri,
        expires_at: b.expires_at,
        call_id: b.call_id,
        cseq: b.cseq,
        source: b.source,
        transport: t_to_store(b.transport),
        instance_id: b.instance_id,
        reg_id: b.reg_id,
        provenance: match b.provenance {
            core::Provenance::CloudVerified { at } => store::Provenance::CloudVerified { at },
            core::Provenance::LocalOnly { at } => store::Provenance::LocalOnly { at },
        },
        last_seen: b.last_seen,
        path: b.path,
    }
}

/// Store row → core binding.
pub fn binding_from_store(b: store::Binding) -> core::Binding {
    core::Binding {
        aor: b.aor,
        contact: b.contact,
        contact_uri: b.contact_uri,
        expires_at: b.expires_at,
        call_id: b.call_id,
        cseq: b.cseq,
        source: b.source,
        transport: t_from_store(b.transport),
        instance_id: b.instance_id,
        reg_id: b.reg_id,
        provenance: match b.provenance {
            store::Provenance::CloudVerified { at } => core::Provenance::CloudVerified { at },
            store::Provenance::LocalOnly { at } => core::Provenance::LocalOnly { at },
        },
        last_seen: b.last_seen,
        path: b.path,
    }
}

/// Core subscription → store row. The notifier (cloud) side is "local"
/// because that is the side holdline takes over in survival.
pub fn sub_to_store(s: core::Subscription) -> store::Subscription {
    store::Subscription {
        id: s.id,
        event: s.event,
        call_id: s.call_id,
        local_tag: s.notifier_tag.unwrap_or_default(),
        remote_tag: s.phone_tag,
        watcher_aor: s.watcher_aor,
        target_uri: s.target_uri,
        remote_target: s.phone_contact,
        route_set: s.route_set,
        local_cseq: s.notify_cseq,
        remote_cseq: s.subscribe_cseq,
        expires_at: s.expires_at,
        last_version: s.last_version,
        last_body: s.last_body,
        last_content_type: s.last_content_type,
        phone: s.phone.addr,
        transport: t_to_store(s.phone.transport),
    }
}

/// Store row → core subscription (state Active; expired ones are swept by the core).
pub fn sub_from_store(s: store::Subscription) -> core::Subscription {
    core::Subscription {
        id: s.id,
        event: s.event,
        call_id: s.call_id,
        phone_tag: s.remote_tag,
        notifier_tag: (!s.local_tag.is_empty()).then_some(s.local_tag),
        watcher_aor: s.watcher_aor,
        target_uri: s.target_uri,
        phone_contact: s.remote_target,
        route_set: s.route_set,
        subscribe_cseq: s.remote_cseq,
        notify_cseq: s.local_cseq,
        expires_at: s.expires_at,
        phone: core::Peer {
            transport: t_from_store(s.transport),
            addr: s.phone,
        },
        state: core::SubState::Active,
        last_version: s.last_version,
        last_body: s.last_body,
        last_content_type: s.last_content_type,
        last_notify_at: None,
        notifies: 0,
    }
}

/// Core store write → store write.
pub fn write_to_store(w: core::StoreWrite) -> store::Write {
    match w {
        core::StoreWrite::UpsertBinding(b) => store::Write::UpsertBinding(binding_to_store(b)),
        core::StoreWrite::RemoveBinding { aor, contact_uri } => store::Write::RemoveBinding {
            aor,
            contact: contact_uri,
        },
        core::StoreWrite::RemoveAor { aor } => store::Write::RemoveAor { aor },
        core::StoreWrite::UpsertSubscription(s) => {
            store::Write::UpsertSubscription(sub_to_store(s))
        }
        core::StoreWrite::RemoveSubscription { id } => store::Write::RemoveSubscription { id },
        core::StoreWrite::Event { at, kind, detail } => {
            store::Write::Event(store::Event { at, kind, detail })
        }
        core::StoreWrite::SetMwi { aor, mwi } => store::Write::SetMwi {
            aor,
            body: mwi.body,
            content_type: mwi.content_type,
            at: mwi.at,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    #[test]
    fn binding_round_trip() {
        let b = core::Binding {
            aor: "sip:a@x".into(),
            contact: "<sip:a@10.0.0.1>;+sip.instance=\"<urn:uuid:1>\"".into(),
            contact_uri: "sip:a@10.0.0.1".into(),
            expires_at: 1_900_000_000,
            call_id: "c".into(),
            cseq: 7,
            source: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5062),
            transport: core::Transport::Tcp,
            instance_id: Some("<urn:uuid:1>".into()),
            reg_id: Some(1),
            provenance: core::Provenance::CloudVerified { at: 1_899_999_000 },
            last_seen: 1_899_999_000,
            path: vec!["<sip:127.0.0.1:5070;lr>".into()],
        };
        assert_eq!(binding_from_store(binding_to_store(b.clone())), b);
    }
}
