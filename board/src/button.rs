//! What a press of the reset button means, from its sampled level: a long
//! press (held at least the profile's `long_press_secs`) requests a factory
//! reset, once per press; a short press does nothing but get logged.
//! Sans-IO: the caller samples the pin and passes the time.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// Held past the long-press time (reported once, while still held).
    LongPress,
    /// Released before the long-press time: harmless.
    ShortPress { held: Duration },
}

#[derive(Debug, Clone)]
pub struct ButtonTracker {
    long_press: Duration,
    pressed_since: Option<Instant>,
    fired: bool,
}

impl ButtonTracker {
    pub fn new(long_press: Duration) -> Self {
        Self {
            long_press,
            pressed_since: None,
            fired: false,
        }
    }

    /// Feeds one sample.
    pub fn sample(&mut self, pressed: bool, now: Instant) -> Option<ButtonEvent> {
        match (pressed, self.pressed_since) {
            (true, None) => {
                self.pressed_since = Some(now);
                self.fired = false;
                None
            }
            (true, Some(since)) => {
                if !self.fired && now.saturating_duration_since(since) >= self.long_press {
                    self.fired = true;
                    Some(ButtonEvent::LongPress)
                } else {
                    None
                }
            }
            (false, Some(since)) => {
                self.pressed_since = None;
                if self.fired {
                    None
                } else {
                    Some(ButtonEvent::ShortPress {
                        held: now.saturating_duration_since(since),
                    })
                }
            }
            (false, None) => None,
        }
    }

    /// The button is held and the long press has been reached.
    pub fn long_press_held(&self) -> bool {
        self.pressed_since.is_some() && self.fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_press_is_harmless_long_press_fires_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = ButtonTracker::new(s(10));
        assert_eq!(b.sample(false, t0), None);
        assert_eq!(b.sample(true, t0), None);
        assert_eq!(
            b.sample(false, t0 + s(2)),
            Some(ButtonEvent::ShortPress { held: s(2) })
        );
        assert_eq!(b.sample(true, t0 + s(3)), None);
        assert_eq!(b.sample(true, t0 + s(9)), None);
        assert!(!b.long_press_held());
        assert_eq!(b.sample(true, t0 + s(13)), Some(ButtonEvent::LongPress));
        assert!(b.long_press_held());
        assert_eq!(b.sample(true, t0 + s(30)), None);
        assert_eq!(b.sample(false, t0 + s(31)), None);
        assert!(!b.long_press_held());
    }
}
