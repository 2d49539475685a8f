//! Sans-IO line editor for a terminal on the serial port: bytes in, echo
//! bytes and finished lines out. No clock, no I/O.
//!
//! - printable ASCII is inserted and echoed (or echoed as `*` when masking a
//!   password, or not at all);
//! - Backspace (0x08) and DEL (0x7f) erase the last character (`BS SP BS`);
//! - Ctrl-U (0x15) erases the whole line; Ctrl-C (0x03) abandons it
//!   ([`Event::Interrupt`]); Ctrl-D (0x04) on an empty line is
//!   [`Event::Eof`] (log out);
//! - CR, LF and CRLF each end a line exactly once (a CR followed by LF is
//!   one line end, as terminals send either);
//! - escape sequences (arrow keys, function keys) are swallowed, not
//!   inserted; other control bytes and non-ASCII are ignored;
//! - a line is at most [`MAX_LINE`] characters: further input rings the bell.

/// Longest line accepted.
pub const MAX_LINE: usize = 256;

/// How typed characters are echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// As typed.
    On,
    /// As `*` (password).
    Mask,
    /// Not at all.
    Off,
}

/// What a byte completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A finished line (without its line end).
    Line(String),
    /// Ctrl-C: the line was abandoned.
    Interrupt,
    /// Ctrl-D on an empty line.
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    /// After ESC.
    Start,
    /// Inside `ESC [` … or `ESC O` …, until a final byte.
    Seq,
}

/// The editor. Feed it bytes; it appends what to echo to `out`.
#[derive(Debug, Clone)]
pub struct LineEditor {
    buf: String,
    echo: Echo,
    after_cr: bool,
    esc: Esc,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new(Echo::On)
    }
}

const BS_SP_BS: &[u8] = b"\x08 \x08";
const BELL: u8 = 0x07;

impl LineEditor {
    pub fn new(echo: Echo) -> Self {
        Self {
            buf: String::new(),
            echo,
            after_cr: false,
            esc: Esc::None,
        }
    }

    /// Changes the echo mode (for the password prompt); keeps the line.
    pub fn set_echo(&mut self, echo: Echo) {
        self.echo = echo;
    }

    /// The line typed so far.
    pub fn pending(&self) -> &str {
        &self.buf
    }

    /// Drops any partial line (e.g. after an idle timeout).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.esc = Esc::None;
    }

    fn erase_one(&mut self, out: &mut Vec<u8>) {
        if self.buf.pop().is_some() && self.echo != Echo::Off {
            out.extend_from_slice(BS_SP_BS);
        }
    }

    /// Feeds one byte; echo goes to `out`.
    pub fn feed(&mut self, byte: u8, out: &mut Vec<u8>) -> Option<Event> {
        let after_cr = std::mem::take(&mut self.after_cr);
        match self.esc {
            Esc::Start => {
                self.esc = if byte == b'[' || byte == b'O' {
                    Esc::Seq
                } else {
                    Esc::None
                };
                return None;
            }
            Esc::Seq => {
                // Parameters and intermediates are 0x20..=0x3f; a final byte
                // 0x40..=0x7e ends the sequence.
                if !(0x20..=0x3f).contains(&byte) {
                    self.esc = Esc::None;
                }
                return None;
            }
            Esc::None => {}
        }
        match byte {
            b'\r' | b'\n' => {
                if byte == b'\n' && after_cr {
                    return None;
                }
                self.after_cr = byte == b'\r';
                out.extend_from_slice(b"\r\n");
                Some(Event::Line(std::mem::take(&mut self.buf)))
            }
            0x08 | 0x7f => {
                self.erase_one(out);
                None
            }
            0x15 => {
                while !self.buf.is_empty() {
                    self.erase_one(out);
                }
                None
            }
            0x03 => {
                self.buf.clear();
                out.extend_from_slice(b"^C\r\n");
                Some(Event::Interrupt)
            }
            0x04 => {
                if self.buf.is_empty() {
                    out.extend_from_slice(b"\r\n");
                    Some(Event::Eof)
                } else {
                    None
                }
            }
            0x1b => {
                self.esc = Esc::Start;
                None
            }
            0x20..=0x7e => {
                if self.buf.len() >= MAX_LINE {
                    out.push(BELL);
                    return None;
                }
                self.buf.push(char::from(byte));
                match self.echo {
                    Echo::On => out.push(byte),
                    Echo::Mask => out.push(b'*'),
                    Echo::Off => {}
                }
                None
            }
            _ => None,
        }
    }

    /// Feeds many bytes; returns the events in order.
    pub fn feed_all(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Vec<Event> {
        bytes.iter().filter_map(|&b| self.feed(b, out)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> (Vec<Event>, Vec<u8>) {
        let mut ed = LineEditor::default();
        let mut out = Vec::new();
        let events = ed.feed_all(bytes, &mut out);
        (events, out)
    }

    fn line(s: &str) -> Event {
        Event::Line(s.into())
    }

    #[test]
    fn cr_lf_and_crlf_each_end_one_line() {
        let (ev, _) = run(b"a\rb\nc\r\nd\n\re\r\r");
        assert_eq!(
            ev,
            vec![
                line("a"),
                line("b"),
                line("c"),
                line("d"),
                line(""),
                line("e"),
                line("")
            ]
        );
    }

    #[test]
    fn echo_and_backspace_and_del() {
        let (ev, out) = run(b"shox\x08w\x7f\x7fow\r");
        assert_eq!(ev, vec![line("show")]);
        assert_eq!(out, b"shox\x08 \x08w\x08 \x08\x08 \x08ow\r\n");
        // Backspace on an empty line echoes nothing.
        let (_, out) = run(b"\x08\x7f");
        assert!(out.is_empty());
    }

    #[test]
    fn ctrl_u_erases_and_ctrl_c_abandons() {
        let (ev, out) = run(b"abc\x15xy\r");
        assert_eq!(ev, vec![line("xy")]);
        assert!(out.starts_with(b"abc\x08 \x08\x08 \x08\x08 \x08xy"));
        let (ev, out) = run(b"reb\x03status\r");
        assert_eq!(ev, vec![Event::Interrupt, line("status")]);
        assert!(out.windows(4).any(|w| w == b"^C\r\n"));
    }

    #[test]
    fn ctrl_d_only_on_an_empty_line() {
        let (ev, _) = run(b"ab\x04\r\x04");
        assert_eq!(ev, vec![line("ab"), Event::Eof]);
    }

    #[test]
    fn escape_sequences_are_swallowed() {
        let (ev, out) = run(b"st\x1b[Aat\x1b[1;5Cus\x1bOP\r");
        assert_eq!(ev, vec![line("status")]);
        assert_eq!(out, b"status\r\n");
    }

    #[test]
    fn masked_and_silent_echo() {
        let mut ed = LineEditor::new(Echo::Mask);
        let mut out = Vec::new();
        assert_eq!(ed.feed_all(b"pw\x7fd\r", &mut out), vec![line("pd")]);
        assert_eq!(out, b"**\x08 \x08*\r\n");
        ed.set_echo(Echo::Off);
        out.clear();
        assert_eq!(ed.feed_all(b"xy\x7f\r", &mut out), vec![line("x")]);
        assert_eq!(out, b"\r\n");
    }

    #[test]
    fn long_lines_ring_the_bell_and_junk_never_panics() {
        let mut ed = LineEditor::default();
        let mut out = Vec::new();
        for _ in 0..MAX_LINE + 10 {
            ed.feed(b'x', &mut out);
        }
        assert_eq!(ed.pending().len(), MAX_LINE);
        assert_eq!(out.iter().filter(|&&b| b == BELL).count(), 10);
        let junk: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut ed = LineEditor::default();
        let events = ed.feed_all(&junk, &mut out);
        assert!(!events.is_empty());
        for e in events {
            if let Event::Line(l) = e {
                assert!(l.len() <= MAX_LINE && l.is_ascii());
            }
        }
    }
}
