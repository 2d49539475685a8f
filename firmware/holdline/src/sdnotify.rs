//! systemd's notify protocol (sd_notify(3)): `READY=1` once serving,
//! `STOPPING=1` on shutdown. (`WATCHDOG=1` is sent by the board's `hw`
//! module, only while every critical task is fresh.)
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call is a no-op.

use std::os::unix::net::UnixDatagram;

/// A notifier bound to `$NOTIFY_SOCKET`, if any.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::path::PathBuf)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let path = std::path::PathBuf::from(p);
            // Abstract sockets (leading '@') are not supported by std paths; skip them.
            if path.as_os_str().as_encoded_bytes().first() == Some(&b'@') {
                return None;
            }
            UnixDatagram::unbound().ok().map(|s| (s, path))
        });
        Notifier { socket }
    }

    /// Sends one state string; errors are ignored (systemd may be gone).
    pub fn notify(&self, state: &str) {
        if let Some((s, path)) = &self.socket {
            let _ = s.send_to(state.as_bytes(), path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("hl-sdnotify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier {
            socket: Some((UnixDatagram::unbound().expect("socket"), path.clone())),
        };
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
        let none = Notifier { socket: None };
        none.notify("READY=1");
    }
}
