//! The serial console port: a real UART through tokio-serial (8N1, no flow
//! control), or — on the simulated board — a pseudo-terminal whose slave a
//! terminal emulator opens. Both are `AsyncRead + AsyncWrite`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};
use crate::profile::SerialConfig;

/// Opens a UART at `baud`, 8N1, no flow control. Needs a tokio runtime.
pub fn open_serial(device: &Path, baud: u32) -> Result<tokio_serial::SerialStream> {
    use tokio_serial::{DataBits, FlowControl, Parity, SerialPortBuilderExt, StopBits};
    let path = device.to_string_lossy();
    tokio_serial::new(path.as_ref(), baud)
        .data_bits(DataBits::Eight)
        .parity(Parity::None)
        .stop_bits(StopBits::One)
        .flow_control(FlowControl::None)
        .open_native_async()
        .map_err(|e| Error::io(format!("opening {}", device.display()), io::Error::from(e)))
}

/// The master side of a pseudo-terminal. The slave is kept open (in raw
/// mode) so that reads wait for a terminal instead of failing while none
/// is attached.
pub struct PtyPort {
    master: AsyncFd<OwnedFd>,
    _slave: OwnedFd,
    slave_path: PathBuf,
    link: Option<PathBuf>,
}

impl PtyPort {
    /// Needs a tokio runtime. `link`: a symlink to create to the slave.
    pub fn open(link: Option<PathBuf>) -> Result<Self> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let pty = nix::pty::openpty(None, None).map_err(|e| Error::errno("openpty", e))?;
        let mut tio = tcgetattr(&pty.slave).map_err(|e| Error::errno("tcgetattr", e))?;
        cfmakeraw(&mut tio);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &tio).map_err(|e| Error::errno("tcsetattr", e))?;
        let slave_path =
            nix::unistd::ttyname(pty.slave.as_fd()).map_err(|e| Error::errno("ttyname", e))?;
        let flags = fcntl(&pty.master, FcntlArg::F_GETFL).map_err(|e| Error::errno("fcntl", e))?;
        fcntl(
            &pty.master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(|e| Error::errno("fcntl O_NONBLOCK", e))?;
        // SAFETY: `OwnedFd` owns an open descriptor and always returns that
        // same descriptor from as_raw_fd until it is dropped with the AsyncFd.
        let master = unsafe { AsyncFd::register(pty.master) }
            .map_err(|e| Error::io("registering pty", io::Error::from(e)))?;
        if let Some(link) = &link {
            let _ = std::fs::remove_file(link);
            std::os::unix::fs::symlink(&slave_path, link)
                .map_err(|e| Error::io(format!("linking {}", link.display()), e))?;
        }
        Ok(Self {
            master,
            _slave: pty.slave,
            slave_path,
            link,
        })
    }

    /// What a terminal emulator opens.
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }
}

impl Drop for PtyPort {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            let _ = std::fs::remove_file(link);
        }
    }
}

impl AsyncRead for PtyPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.master.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.master.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The console port a profile names.
pub enum ConsolePort {
    Serial(tokio_serial::SerialStream),
    Pty(PtyPort),
}

impl ConsolePort {
    /// Opens the profile's console (None when the profile has none).
    /// Relative pty links are taken from `state_dir`. Needs a tokio runtime.
    pub fn open(cfg: &SerialConfig, state_dir: &Path) -> Result<Option<Self>> {
        match cfg {
            SerialConfig::Device { device, baud } => {
                Ok(Some(ConsolePort::Serial(open_serial(device, *baud)?)))
            }
            SerialConfig::Pty { link } => {
                let link = link.as_ref().map(|l| state_dir.join(l));
                Ok(Some(ConsolePort::Pty(PtyPort::open(link)?)))
            }
            SerialConfig::None => Ok(None),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ConsolePort::Serial(_) => "serial port".to_string(),
            ConsolePort::Pty(p) => format!("pty {}", p.slave_path().display()),
        }
    }
}

impl AsyncRead for ConsolePort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConsolePort::Serial(s) => Pin::new(s).poll_read(cx, buf),
            ConsolePort::Pty(p) => Pin::new(p).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConsolePort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ConsolePort::Serial(s) => Pin::new(s).poll_write(cx, data),
            ConsolePort::Pty(p) => Pin::new(p).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConsolePort::Serial(s) => Pin::new(s).poll_flush(cx),
            ConsolePort::Pty(p) => Pin::new(p).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConsolePort::Serial(s) => Pin::new(s).poll_shutdown(cx),
            ConsolePort::Pty(p) => Pin::new(p).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn pty_port_carries_bytes_both_ways() {
        let dir = std::env::temp_dir().join(format!("holdline-pty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = SerialConfig::Pty {
            link: Some("console.pty".into()),
        };
        let Some(ConsolePort::Pty(mut port)) = ConsolePort::open(&cfg, &dir).unwrap() else {
            panic!("expected a pty");
        };
        let link = dir.join("console.pty");
        assert_eq!(std::fs::read_link(&link).unwrap(), port.slave_path());
        // The "terminal emulator" opens the slave like `screen` would.
        let mut term = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&link)
            .unwrap();
        term.write_all(b"hello\r").unwrap();
        let mut got = [0u8; 6];
        port.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello\r");
        port.write_all(b"ok\r\n").await.unwrap();
        let mut back = [0u8; 4];
        tokio::task::spawn_blocking(move || term.read_exact(&mut back).map(|_| back))
            .await
            .unwrap()
            .map(|b| assert_eq!(&b, b"ok\r\n"))
            .unwrap();
        drop(port);
        assert!(!link.exists());
    }
}
