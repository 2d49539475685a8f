//! Bytes from a TCP stream, in arbitrary chunks → StreamFramer → classify:
//! no panic, the framer's buffer stays bounded.
#![no_main]

use holdline_sip::framing::{Frame, StreamFramer};
use holdline_sip::inbound::classify_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut % 64) + 1;
    let mut f = StreamFramer::new(2048);
    for piece in rest.chunks(chunk) {
        if f.push(piece).is_err() {
            continue;
        }
        assert!(f.buffered() <= 4096);
        while let Ok(Some(frame)) = f.next_frame() {
            if let Frame::Message(m) = frame {
                assert!(m.len() <= 2048);
                let _ = classify_message(&m);
            }
        }
    }
});
