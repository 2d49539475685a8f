//! Console answers: one data model, two renderings.
//!
//! A command's answer is an [`Answer`]: a list of named [`Block`]s (a set of
//! fields, or a table). [`Answer::text`] renders aligned plain text that
//! fits 80 columns (serial terminals), cutting long cells with `~`;
//! [`Answer::json`] renders one JSON object for machines:
//! `{"ok":true,"<block>":{...}|[...],...}` or `{"ok":false,"error":"..."}`.
//! Plain ASCII output only, so any terminal emulator shows it.

use std::fmt::Write as _;

/// Width of the console screen.
pub const COLUMNS: usize = 80;

/// One cell or field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent / not applicable (`-` in text, `null` in JSON).
    Null,
    /// A flag.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A real number (JSON number; text with up to 3 decimals).
    Float(f64),
    /// Text.
    Text(String),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(i64::from(n))
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Self {
        match o {
            Some(v) => v.into(),
            None => Value::Null,
        }
    }
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Null => "-".to_string(),
            Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(x) => {
                if x.is_finite() {
                    let s = format!("{x:.3}");
                    let s = s.trim_end_matches('0').trim_end_matches('.');
                    s.to_string()
                } else {
                    "-".to_string()
                }
            }
            Value::Text(s) => s.chars().map(printable).collect(),
        }
    }

    fn json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Float(x) => {
                if x.is_finite() {
                    let _ = write!(out, "{x}");
                } else {
                    out.push_str("null");
                }
            }
            Value::Text(s) => json_string(s, out),
        }
    }
}

/// Replaces control and non-ASCII characters for a plain terminal.
fn printable(c: char) -> char {
    if c.is_ascii_graphic() || c == ' ' {
        c
    } else {
        '?'
    }
}

/// A table: column names (also the JSON keys) and rows of values.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names, lower case, no spaces (used as JSON keys and headings).
    pub columns: Vec<&'static str>,
    /// Rows; each has one value per column (missing ones render as `-`).
    pub rows: Vec<Vec<Value>>,
}

/// One named part of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// `name: value` lines (JSON: an object).
    Fields {
        /// JSON key of the block.
        name: &'static str,
        /// Field names and values, in display order.
        fields: Vec<(&'static str, Value)>,
    },
    /// A table (JSON: an array of objects).
    Table {
        /// JSON key of the block; also the text heading.
        name: &'static str,
        /// The table.
        table: Table,
    },
    /// Free text lines (JSON: an array of strings).
    Lines {
        /// JSON key of the block.
        name: &'static str,
        /// The lines.
        lines: Vec<String>,
    },
}

/// A command's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The command succeeded (the client exits 0) or not (exit 1).
    pub ok: bool,
    /// Error message when `!ok`.
    pub error: Option<String>,
    /// What to show.
    pub blocks: Vec<Block>,
}

impl Answer {
    /// A successful answer made of these blocks.
    pub fn ok(blocks: Vec<Block>) -> Self {
        Answer {
            ok: true,
            error: None,
            blocks,
        }
    }

    /// A failed command with its one-line reason.
    pub fn error(msg: impl Into<String>) -> Self {
        Answer {
            ok: false,
            error: Some(msg.into()),
            blocks: Vec::new(),
        }
    }

    /// The answer for a command this build does not implement.
    pub fn not_available(command: &str) -> Self {
        Answer::error(format!("{command}: not available in this build"))
    }

    /// Aligned plain text, every line at most [`COLUMNS`] wide, ending in a newline.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(e) = &self.error {
            out.push_str(&fit(&format!("error: {e}"), COLUMNS));
            out.push('\n');
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match b {
                Block::Fields { fields, .. } => {
                    let w = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                    for (k, v) in fields {
                        let line = format!("{k:<w$}  {}", v.text());
                        out.push_str(&fit(&line, COLUMNS));
                        out.push('\n');
                    }
                }
                Block::Table { name, table } => render_table(name, table, &mut out),
                Block::Lines { lines, .. } => {
                    for l in lines {
                        let clean: String = l.chars().map(printable).collect();
                        out.push_str(&fit(&clean, COLUMNS));
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// One JSON object on one line (no trailing newline).
    pub fn json(&self) -> String {
        let mut out = String::from("{\"ok\":");
        out.push_str(if self.ok { "true" } else { "false" });
        if let Some(e) = &self.error {
            out.push_str(",\"error\":");
            json_string(e, &mut out);
        }
        for b in &self.blocks {
            out.push(',');
            match b {
                Block::Fields { name, fields } => {
                    json_string(name, &mut out);
                    out.push_str(":{");
                    for (i, (k, v)) in fields.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        json_string(k, &mut out);
                        out.push(':');
                        v.json(&mut out);
                    }
                    out.push('}');
                }
                Block::Table { name, table } => {
                    json_string(name, &mut out);
                    out.push_str(":[");
                    for (r, row) in table.rows.iter().enumerate() {
                        if r > 0 {
                            out.push(',');
                        }
                        out.push('{');
                        for (i, col) in table.columns.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            json_string(col, &mut out);
                            out.push(':');
                            row.get(i).unwrap_or(&Value::Null).json(&mut out);
                        }
                        out.push('}');
                    }
                    out.push(']');
                }
                Block::Lines { name, lines } => {
                    json_string(name, &mut out);
                    out.push_str(":[");
                    for (i, l) in lines.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        json_string(l, &mut out);
                    }
                    out.push(']');
                }
            }
        }
        out.push('}');
        out
    }

    /// Text or JSON as asked.
    pub fn render(&self, json: bool) -> String {
        if json {
            let mut s = self.json();
            s.push('\n');
            s
        } else {
            self.text()
        }
    }
}

/// Cuts `s` to `width` characters, marking the cut with `~`.
fn fit(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('~');
    out
}

fn render_table(name: &str, t: &Table, out: &mut String) {
    if t.rows.is_empty() {
        let _ = writeln!(out, "({name}: none)");
        return;
    }
    let cells: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|r| {
            (0..t.columns.len())
                .map(|i| r.get(i).unwrap_or(&Value::Null).text())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = t.columns.iter().map(|c| c.len()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    // Shrink the widest column until the table fits (2 spaces between columns).
    let gaps = 2 * t.columns.len().saturating_sub(1);
    while widths.iter().sum::<usize>() + gaps > COLUMNS {
        let Some((i, w)) = widths.iter().copied().enumerate().max_by_key(|(_, w)| *w) else {
            break;
        };
        if w <= 4 {
            break;
        }
        widths[i] = w - 1;
    }
    let line = |vals: &[String], out: &mut String| {
        let mut l = String::new();
        for (i, v) in vals.iter().enumerate() {
            let w = widths[i];
            let cell = fit(v, w);
            if i + 1 == vals.len() {
                l.push_str(&cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(&fit(l.trim_end(), COLUMNS));
        out.push('\n');
    };
    let heads: Vec<String> = t.columns.iter().map(|c| c.to_ascii_uppercase()).collect();
    line(&heads, out);
    for row in &cells {
        line(row, out);
    }
}

/// Appends `s` as a JSON string literal.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Answer {
        Answer::ok(vec![
            Block::Fields {
                name: "status",
                fields: vec![("uplink", "up".into()), ("bindings", 3usize.into())],
            },
            Block::Table {
                name: "registrations",
                table: Table {
                    columns: vec!["aor", "contact", "expires"],
                    rows: vec![vec![
                        "sip:alice@cloud.test".into(),
                        "x".repeat(200).into(),
                        Value::Int(3600),
                    ]],
                },
            },
        ])
    }

    #[test]
    fn text_fits_80_columns() {
        let t = sample().text();
        assert!(t.contains("uplink    up"));
        assert!(t.contains("AOR"));
        for l in t.lines() {
            assert!(l.chars().count() <= COLUMNS, "too wide: {l}");
        }
        assert!(t.contains('~'));
    }

    #[test]
    fn json_shape() {
        let j = sample().json();
        assert!(j.starts_with("{\"ok\":true,\"status\":{\"uplink\":\"up\",\"bindings\":3}"));
        assert!(j.contains("\"registrations\":[{\"aor\":\"sip:alice@cloud.test\""));
        assert!(j.contains("\"expires\":3600}]"));
    }

    #[test]
    fn errors_render() {
        let a = Answer::error("unknown command \"x\"\n");
        assert_eq!(
            a.json(),
            "{\"ok\":false,\"error\":\"unknown command \\\"x\\\"\\n\"}"
        );
        assert!(a.text().starts_with("error: unknown command"));
        let n = Answer::not_available("reboot");
        assert!(!n.ok);
        assert!(n.text().contains("not available in this build"));
    }

    #[test]
    fn empty_table_and_control_chars() {
        let a = Answer::ok(vec![Block::Table {
            name: "calls",
            table: Table {
                columns: vec!["id"],
                rows: vec![],
            },
        }]);
        assert_eq!(a.text(), "(calls: none)\n");
        assert_eq!(a.json(), "{\"ok\":true,\"calls\":[]}");
        let b = Answer::ok(vec![Block::Lines {
            name: "log",
            lines: vec!["a\u{1b}[2Jb\u{0}".into()],
        }]);
        assert_eq!(b.text(), "a?[2Jb?\n");
        assert_eq!(b.json(), "{\"ok\":true,\"log\":[\"a\\u001b[2Jb\\u0000\"]}");
    }

    #[test]
    fn floats() {
        assert_eq!(Value::Float(1.5).text(), "1.5");
        assert_eq!(Value::Float(2.0).text(), "2");
        assert_eq!(Value::Float(f64::NAN).text(), "-");
    }
}
