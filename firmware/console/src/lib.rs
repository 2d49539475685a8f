//! Console command language and serial line discipline, shared by the Unix
//! socket (`holdline console`) and the serial port (115200 8N1).
//!
//! - `command`: a line of text → [`command::Command`] (never panics; unknown
//!   input becomes `Command::Unknown`).
//! - `render`: answers as aligned text that fits 80 columns, or JSON.
//! - `line`, `login`, `serial`: what a terminal on the serial port needs —
//!   line editing, a login with lock-out, an idle timeout.

pub mod command;
pub mod line;
pub mod login;
pub mod render;
pub mod serial;
