//! What the LEDs show: a pure mapping from the appliance's state to a
//! blink pattern per LED ([`plan`]), and [`Leds`], which drives the pins of a
//! board with a plan at a given blink phase.
//!
//! | state                      | status | cloud (green) | cloud_alt (amber) | fault |
//! |----------------------------|--------|---------------|-------------------|-------|
//! | starting                   | slow   |               |                   |       |
//! | healthy                    | on     |               |                   |       |
//! | a critical task stale      | fast   |               |                   |       |
//! | cloud up                   |        | on            | off               |       |
//! | cloud down: survival       |        | off (slow¹)   | on                |       |
//! | cloud back: recovering     |        | fast          | off               |       |
//! | cloud state unknown        |        | off           | off               |       |
//! | fault (store, last reset)  |        |               |                   | on    |
//! | reset button held long     | fast   | fast          | fast              | fast  |
//!
//! ¹ on boards without a second cloud LED, survival blinks the cloud LED slowly.

use crate::error::Result;
use crate::pin::{Led, OutPin};

/// Blink period unit: the LED task ticks every `TICK`; patterns are
/// defined in ticks so they are testable without a clock.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(125);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Off,
    On,
    /// 1 Hz: 4 ticks on, 4 off.
    Slow,
    /// 4 Hz: 1 tick on, 1 off.
    Fast,
}

impl Pattern {
    pub fn level(self, phase: u32) -> bool {
        match self {
            Pattern::Off => false,
            Pattern::On => true,
            Pattern::Slow => phase % 8 < 4,
            Pattern::Fast => phase.is_multiple_of(2),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Off => "off",
            Pattern::On => "on",
            Pattern::Slow => "blink slow",
            Pattern::Fast => "blink fast",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthLight {
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudLight {
    Up,
    Survival,
    Recovering,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indication {
    pub health: HealthLight,
    pub cloud: CloudLight,
    pub fault: bool,
    /// The reset button has been held past the long-press time.
    pub button_long_press: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub status: Pattern,
    pub cloud: Pattern,
    pub cloud_alt: Pattern,
    pub fault: Pattern,
}

/// The patterns for `ind` on a board with or without a second cloud LED.
pub fn plan(ind: &Indication, has_cloud_alt: bool) -> Plan {
    if ind.button_long_press {
        return Plan {
            status: Pattern::Fast,
            cloud: Pattern::Fast,
            cloud_alt: Pattern::Fast,
            fault: Pattern::Fast,
        };
    }
    let status = match ind.health {
        HealthLight::Starting => Pattern::Slow,
        HealthLight::Healthy => Pattern::On,
        HealthLight::Unhealthy => Pattern::Fast,
    };
    let (cloud, cloud_alt) = match (ind.cloud, has_cloud_alt) {
        (CloudLight::Up, _) => (Pattern::On, Pattern::Off),
        (CloudLight::Survival, true) => (Pattern::Off, Pattern::On),
        (CloudLight::Survival, false) => (Pattern::Slow, Pattern::Off),
        (CloudLight::Recovering, _) => (Pattern::Fast, Pattern::Off),
        (CloudLight::Unknown, _) => (Pattern::Off, Pattern::Off),
    };
    let fault = if ind.fault { Pattern::On } else { Pattern::Off };
    Plan {
        status,
        cloud,
        cloud_alt,
        fault,
    }
}

/// The board's LEDs.
pub struct Leds {
    pub status: Led<OutPin>,
    pub cloud: Led<OutPin>,
    pub cloud_alt: Option<Led<OutPin>>,
    pub fault: Option<Led<OutPin>>,
    last: Option<Plan>,
}

/// One LED's line in `show leds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedReport {
    pub name: &'static str,
    pub pattern: Pattern,
    pub lit: bool,
}

impl Leds {
    pub fn new(
        status: Led<OutPin>,
        cloud: Led<OutPin>,
        cloud_alt: Option<Led<OutPin>>,
        fault: Option<Led<OutPin>>,
    ) -> Self {
        Self {
            status,
            cloud,
            cloud_alt,
            fault,
            last: None,
        }
    }

    pub fn has_cloud_alt(&self) -> bool {
        self.cloud_alt.is_some()
    }

    /// Drives every LED for `ind` at blink `phase` (ticks of [`TICK`]).
    pub fn show(&mut self, ind: &Indication, phase: u32) -> Result<Plan> {
        let p = plan(ind, self.has_cloud_alt());
        self.status.set(p.status.level(phase))?;
        self.cloud.set(p.cloud.level(phase))?;
        if let Some(led) = &mut self.cloud_alt {
            led.set(p.cloud_alt.level(phase))?;
        }
        if let Some(led) = &mut self.fault {
            led.set(p.fault.level(phase))?;
        }
        self.last = Some(p);
        Ok(p)
    }

    /// What each LED shows now (for `show leds`).
    pub fn report(&self) -> Vec<LedReport> {
        let Some(p) = self.last else {
            return Vec::new();
        };
        let mut out = vec![
            LedReport {
                name: "status",
                pattern: p.status,
                lit: self.status.is_on().unwrap_or(false),
            },
            LedReport {
                name: "cloud",
                pattern: p.cloud,
                lit: self.cloud.is_on().unwrap_or(false),
            },
        ];
        if let Some(led) = &self.cloud_alt {
            out.push(LedReport {
                name: "cloud-alt",
                pattern: p.cloud_alt,
                lit: led.is_on().unwrap_or(false),
            });
        }
        if let Some(led) = &self.fault {
            out.push(LedReport {
                name: "fault",
                pattern: p.fault,
                lit: led.is_on().unwrap_or(false),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind(cloud: CloudLight) -> Indication {
        Indication {
            health: HealthLight::Healthy,
            cloud,
            fault: false,
            button_long_press: false,
        }
    }

    #[test]
    fn each_cloud_state_has_its_own_look() {
        let looks: Vec<(Pattern, Pattern)> = [
            CloudLight::Up,
            CloudLight::Survival,
            CloudLight::Recovering,
            CloudLight::Unknown,
        ]
        .iter()
        .map(|c| {
            let p = plan(&ind(*c), true);
            (p.cloud, p.cloud_alt)
        })
        .collect();
        for (i, a) in looks.iter().enumerate() {
            for b in &looks[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Without the amber LED the single cloud LED still tells them apart.
        let single: Vec<Pattern> = [
            CloudLight::Up,
            CloudLight::Survival,
            CloudLight::Recovering,
            CloudLight::Unknown,
        ]
        .iter()
        .map(|c| plan(&ind(*c), false).cloud)
        .collect();
        assert_eq!(
            single,
            vec![Pattern::On, Pattern::Slow, Pattern::Fast, Pattern::Off]
        );
    }

    #[test]
    fn patterns_blink_at_their_rates() {
        let slow: Vec<bool> = (0..8).map(|t| Pattern::Slow.level(t)).collect();
        assert_eq!(slow, [true, true, true, true, false, false, false, false]);
        let fast: Vec<bool> = (0..4).map(|t| Pattern::Fast.level(t)).collect();
        assert_eq!(fast, [true, false, true, false]);
    }
}
