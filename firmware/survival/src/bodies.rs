//! NOTIFY bodies for the take-over: RFC 4235 dialog-info+xml (full state) and
//! RFC 3842 message-summary.
//!
//! Builders never panic and escape whatever they are given; readers accept
//! anything and return `None` for what they cannot understand.

use std::fmt::Write as _;

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::{Reader, Writer, XmlVersion};

/// Content-Type of dialog-info bodies.
pub const DIALOG_INFO_CONTENT_TYPE: &str = "application/dialog-info+xml";
/// Content-Type of message-summary bodies.
pub const MESSAGE_SUMMARY_CONTENT_TYPE: &str = "application/simple-message-summary";

/// RFC 4235 dialog state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialogState {
    /// INVITE sent or received, nothing back yet.
    Trying,
    /// Provisional without tag.
    Proceeding,
    /// Early dialog (ringing).
    Early,
    /// Answered.
    Confirmed,
    /// Ended.
    Terminated,
}

impl DialogState {
    /// The XML text of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            DialogState::Trying => "trying",
            DialogState::Proceeding => "proceeding",
            DialogState::Early => "early",
            DialogState::Confirmed => "confirmed",
            DialogState::Terminated => "terminated",
        }
    }
}

/// Which side of the dialog the watched entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The entity placed the call.
    Initiator,
    /// The entity received the call.
    Recipient,
}

/// One `<dialog>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogEntry {
    /// `id` attribute (unique per dialog within the document).
    pub id: String,
    /// `call-id` attribute.
    pub call_id: Option<String>,
    /// `local-tag` attribute.
    pub local_tag: Option<String>,
    /// `remote-tag` attribute.
    pub remote_tag: Option<String>,
    /// `direction` attribute.
    pub direction: Option<Direction>,
    /// `<state>`.
    pub state: DialogState,
    /// `<remote><identity>` (a SIP URI), if known.
    pub remote_identity: Option<String>,
}

/// Builds a full-state dialog-info document for `entity` (RFC 4235 §4).
pub fn dialog_info_full(entity: &str, version: u64, dialogs: &[DialogEntry]) -> String {
    let mut w = Writer::new(Vec::new());
    // Writing into a Vec cannot fail; on the impossible error we still return
    // whatever was written rather than panic.
    let _ = write_dialog_info(&mut w, entity, version, dialogs);
    String::from_utf8_lossy(&w.into_inner()).into_owned()
}

fn write_dialog_info(
    w: &mut Writer<Vec<u8>>,
    entity: &str,
    version: u64,
    dialogs: &[DialogEntry],
) -> std::io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let version = version.to_string();
    w.create_element("dialog-info")
        .with_attribute(("xmlns", "urn:ietf:params:xml:ns:dialog-info"))
        .with_attribute(("version", version.as_str()))
        .with_attribute(("state", "full"))
        .with_attribute(("entity", entity))
        .write_inner_content(|w| {
            for d in dialogs {
                let mut el = w
                    .create_element("dialog")
                    .with_attribute(("id", d.id.as_str()));
                if let Some(c) = &d.call_id {
                    el = el.with_attribute(("call-id", c.as_str()));
                }
                if let Some(t) = &d.local_tag {
                    el = el.with_attribute(("local-tag", t.as_str()));
                }
                if let Some(t) = &d.remote_tag {
                    el = el.with_attribute(("remote-tag", t.as_str()));
                }
                if let Some(dir) = d.direction {
                    let dir = match dir {
                        Direction::Initiator => "initiator",
                        Direction::Recipient => "recipient",
                    };
                    el = el.with_attribute(("direction", dir));
                }
                el.write_inner_content(|w| {
                    w.create_element("state")
                        .write_text_content(BytesText::new(d.state.as_str()))?;
                    if let Some(id) = &d.remote_identity {
                        w.create_element("remote").write_inner_content(|w| {
                            w.create_element("identity")
                                .write_text_content(BytesText::new(id))?;
                            Ok(())
                        })?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    Ok(())
}

/// What the root element of a dialog-info body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogInfoHead {
    /// `version` attribute.
    pub version: u64,
    /// `state="full"` (else partial).
    pub full: bool,
    /// `entity` attribute.
    pub entity: String,
}

/// Reads the root of a dialog-info body (from the cloud's NOTIFYs, to carry
/// the version on). `None` if the body is not a dialog-info document.
pub fn read_dialog_info_head(body: &str) -> Option<DialogInfoHead> {
    let mut reader = Reader::from_str(body);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                if e.local_name().into_inner() != "dialog-info" {
                    return None;
                }
                let mut version = None;
                let mut full = false;
                let mut entity = String::new();
                for a in e.attributes().flatten() {
                    let value = a.normalized_value(XmlVersion::Implicit1_0).ok()?;
                    match a.key.local_name().into_inner() {
                        "version" => version = value.trim().parse::<u64>().ok(),
                        "state" => full = value.trim() == "full",
                        "entity" => entity = value.into_owned(),
                        _ => {}
                    }
                }
                return Some(DialogInfoHead {
                    version: version?,
                    full,
                    entity,
                });
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Counts for one message class (`Voice-Message: 2/8 (0/2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageCounts {
    /// New messages.
    pub new: u32,
    /// Old messages.
    pub old: u32,
    /// Urgent new messages.
    pub urgent_new: u32,
    /// Urgent old messages.
    pub urgent_old: u32,
}

/// An RFC 3842 message-summary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageSummary {
    /// `Messages-Waiting: yes|no`.
    pub waiting: bool,
    /// `Message-Account` URI.
    pub account: Option<String>,
    /// Message-class lines (`Voice-Message`, `Fax-Message`, ...) in order.
    pub classes: Vec<(String, MessageCounts)>,
}

fn clean(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_control())
}

impl MessageSummary {
    /// Parses a message-summary body. Unknown lines are skipped; a body
    /// without `Messages-Waiting` is `None`.
    pub fn parse(body: &str) -> Option<MessageSummary> {
        let mut waiting = None;
        let mut account = None;
        let mut classes = Vec::new();
        for line in body.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            let value = value.trim();
            if name.eq_ignore_ascii_case("Messages-Waiting") {
                waiting = match value.to_ascii_lowercase().as_str() {
                    "yes" => Some(true),
                    "no" => Some(false),
                    _ => None,
                };
            } else if name.eq_ignore_ascii_case("Message-Account") {
                account = Some(value.to_owned());
            } else if name.ends_with("-Message") && clean(name) {
                if let Some(c) = parse_counts(value) {
                    classes.push((name.to_owned(), c));
                }
            }
        }
        Some(MessageSummary {
            waiting: waiting?,
            account,
            classes,
        })
    }

    /// The body to send (CRLF line ends). Names or accounts with control
    /// characters are left out rather than injected.
    pub fn to_body(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "Messages-Waiting: {}\r\n",
            if self.waiting { "yes" } else { "no" }
        );
        if let Some(a) = self.account.as_deref().filter(|a| clean(a)) {
            let _ = write!(s, "Message-Account: {a}\r\n");
        }
        for (name, c) in &self.classes {
            if clean(name) && !name.contains(':') {
                let _ = write!(
                    s,
                    "{name}: {}/{} ({}/{})\r\n",
                    c.new, c.old, c.urgent_new, c.urgent_old
                );
            }
        }
        s
    }
}

fn parse_counts(v: &str) -> Option<MessageCounts> {
    let (main, urgent) = match v.split_once('(') {
        Some((m, u)) => (m.trim(), Some(u.trim().trim_end_matches(')').trim())),
        None => (v.trim(), None),
    };
    let pair = |s: &str| -> Option<(u32, u32)> {
        let (a, b) = s.split_once('/')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    };
    let (new, old) = pair(main)?;
    let (urgent_new, urgent_old) = match urgent {
        Some(u) => pair(u)?,
        None => (0, 0),
    };
    Some(MessageCounts {
        new,
        old,
        urgent_new,
        urgent_old,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialog_info_full_state_round_trips_its_head_and_escapes() {
        let body = dialog_info_full(
            "sip:201@cloud.test",
            7,
            &[DialogEntry {
                id: "d1".into(),
                call_id: Some("abc@10.0.0.1".into()),
                local_tag: Some("t1".into()),
                remote_tag: Some("t2\"<&".into()),
                direction: Some(Direction::Initiator),
                state: DialogState::Confirmed,
                remote_identity: Some("sip:202@cloud.test".into()),
            }],
        );
        assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(body.contains("<state>confirmed</state>"));
        assert!(body.contains("direction=\"initiator\""));
        assert!(body.contains("<remote><identity>sip:202@cloud.test</identity></remote>"));
        assert!(body.contains("remote-tag=\"t2&quot;&lt;&amp;\""));
        let head = read_dialog_info_head(&body).unwrap();
        assert_eq!(
            head,
            DialogInfoHead {
                version: 7,
                full: true,
                entity: "sip:201@cloud.test".into()
            }
        );
        // Empty (idle) document.
        let idle = dialog_info_full("sip:203@cloud.test", 0, &[]);
        assert_eq!(read_dialog_info_head(&idle).unwrap().version, 0);
    }

    #[test]
    fn dialog_info_reader_survives_garbage() {
        for body in [
            "",
            "<",
            "not xml",
            "<presence/>",
            "<dialog-info version=\"x\"/>",
            "<dialog-info version=\"18446744073709551616\"/>",
            "<?xml version=\"1.0\"?><dialog-info",
            "\u{0}\u{ffff}<<<>>>",
        ] {
            assert_eq!(read_dialog_info_head(body), None, "{body:?}");
        }
        let cloud = "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"42\" state=\"partial\" entity=\"sip:201@x\"><dialog id=\"a\"><state>early</state></dialog></dialog-info>";
        let h = read_dialog_info_head(cloud).unwrap();
        assert_eq!((h.version, h.full), (42, false));
    }

    #[test]
    fn readers_never_panic_on_random_input() {
        let mut rng = crate::rng::Rng::seeded(77);
        let alphabet: Vec<char> =
            "<>/=\"' &;:#xX09dialog-info version state full\r\n\u{0}\u{feff}é"
                .chars()
                .collect();
        for _ in 0..3_000 {
            let len = usize::try_from(rng.range_inclusive(0, 120)).unwrap();
            let s: String = (0..len)
                .map(|_| {
                    alphabet[usize::try_from(rng.range_inclusive(0, alphabet.len() as u64 - 1))
                        .unwrap()]
                })
                .collect();
            let _ = read_dialog_info_head(&s);
            let _ = read_dialog_info_head(&format!("<dialog-info version=\"{s}\">"));
            let _ = MessageSummary::parse(&s);
            let _ = MessageSummary::parse(&format!("Messages-Waiting: yes\r\n{s}"));
        }
    }

    #[test]
    fn message_summary_parse_and_build() {
        let cloud = "Messages-Waiting: yes\r\nMessage-Account: sip:*97@cloud.test\r\nVoice-Message: 2/8 (0/2)\r\nFax-Message: 1/0\r\nbogus line\r\n";
        let m = MessageSummary::parse(cloud).unwrap();
        assert!(m.waiting);
        assert_eq!(m.account.as_deref(), Some("sip:*97@cloud.test"));
        assert_eq!(
            m.classes,
            vec![
                (
                    "Voice-Message".into(),
                    MessageCounts {
                        new: 2,
                        old: 8,
                        urgent_new: 0,
                        urgent_old: 2
                    }
                ),
                (
                    "Fax-Message".into(),
                    MessageCounts {
                        new: 1,
                        old: 0,
                        ..Default::default()
                    }
                ),
            ]
        );
        let body = m.to_body();
        assert_eq!(MessageSummary::parse(&body).unwrap(), m);
        assert_eq!(
            MessageSummary::default().to_body(),
            "Messages-Waiting: no\r\n"
        );
        assert_eq!(MessageSummary::parse("Voice-Message: 1/1"), None);
        assert_eq!(MessageSummary::parse("Messages-Waiting: maybe"), None);
        let evil = MessageSummary {
            waiting: true,
            account: Some("sip:x\r\nEvil: 1".into()),
            classes: vec![("Bad\r\nX-Message".into(), MessageCounts::default())],
        };
        assert_eq!(evil.to_body(), "Messages-Waiting: yes\r\n");
    }
}
