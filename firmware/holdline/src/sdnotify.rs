//! systemd's notify protocol (sd_notify(3)): `READY=1` once serving,
//! `WATCHDOG=1` while the loop is alive, `STOPPING=1` on shutdown.
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A notifier bound to `$NOTIFY_SOCKET`, if any.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::path::PathBuf)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let path = std::path::PathBuf::from(p);
            // Abstract sockets (leading '@') are not supported by std paths; skip them.
            if path.as_os_str().as_encoded_bytes().first() == Some(&b'@') {
                return None;
            }
            UnixDatagram::unbound().ok().map(|s| (s, path))
        });
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// How often to send `WATCHDOG=1` (half the systemd watchdog period).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        self.watchdog.map(|d| d / 2)
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
            watchdog: Some(Duration::from_secs(30)),
        };
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        let _ = std::fs::remove_dir_all(&dir);
        let none = Notifier {
            socket: None,
            watchdog: Some(Duration::from_secs(30)),
        };
        assert_eq!(none.watchdog_interval(), None);
        none.notify("READY=1");
    }
}
