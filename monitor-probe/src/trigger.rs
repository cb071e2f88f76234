//! Threshold state machines: hysteresis + cooldown ([`Gate`]) and trend prediction ([`Trend`]).
//! Pure (time is passed in, in ns), so they are tested without a kernel.

/// What a new value did to the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Trigger,
    Clear,
}

/// Fires `Trigger` once when the value reaches `trigger`, then nothing until it falls below
/// `clear` (hysteresis), which yields `Clear`. A trigger within `cooldown_ns` of the previous
/// one is held back; it fires when the cooldown ends if the value is still at or above
/// `trigger`, and is dropped if the value falls below `clear` first. So a value hovering at the
/// limit produces one trigger, and a value flapping across both levels at most one per cooldown.
#[derive(Debug, Clone)]
pub struct Gate {
    pub trigger: f64,
    pub clear: f64,
    pub cooldown_ns: u64,
    above: bool,
    pending: bool,
    last_fire: Option<u64>,
}

impl Gate {
    pub fn new(trigger: f64, clear: f64, cooldown_ns: u64) -> Self {
        Gate { trigger, clear: clear.min(trigger), cooldown_ns, above: false, pending: false, last_fire: None }
    }

    /// True once triggered until cleared.
    pub fn is_above(&self) -> bool {
        self.above
    }

    /// True while at or above the trigger level but waiting out the cooldown.
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    fn cooled(&self, now: u64) -> bool {
        self.last_fire.is_none_or(|t| now.saturating_sub(t) >= self.cooldown_ns)
    }

    pub fn update(&mut self, value: f64, now: u64) -> Option<Transition> {
        if self.above {
            if value < self.clear {
                self.above = false;
                return Some(Transition::Clear);
            }
            return None;
        }
        if value < self.clear {
            self.pending = false;
            return None;
        }
        if value >= self.trigger {
            if self.cooled(now) {
                self.pending = false;
                self.above = true;
                self.last_fire = Some(now);
                return Some(Transition::Trigger);
            }
            self.pending = true;
        }
        None
    }
}

/// EWMA of the slope (units per second) of a sampled value; predicts when it reaches a level.
#[derive(Debug, Clone)]
pub struct Trend {
    alpha: f64,
    last: Option<(u64, f64)>,
    slope: f64,
    samples: u32,
    /// Re-armed when the predicted time leaves the horizon, so one rise gives one `predict`.
    armed: bool,
}

impl Default for Trend {
    fn default() -> Self {
        Trend { alpha: 0.4, last: None, slope: 0.0, samples: 0, armed: true }
    }
}

impl Trend {
    pub fn update(&mut self, now: u64, value: f64) {
        if let Some((t, v)) = self.last {
            let dt = now.saturating_sub(t) as f64 / 1e9;
            if dt > 0.0 {
                let s = (value - v) / dt;
                self.slope = if self.samples == 0 { s } else { self.alpha * s + (1.0 - self.alpha) * self.slope };
                self.samples += 1;
            }
        }
        self.last = Some((now, value));
    }

    pub fn slope(&self) -> f64 {
        self.slope
    }

    /// Seconds until `value` reaches `level` at the current slope, if it is rising towards it.
    pub fn eta(&self, value: f64, level: f64) -> Option<f64> {
        if self.samples < 2 || self.slope <= 0.0 || value >= level {
            return None;
        }
        Some((level - value) / self.slope)
    }

    /// `Some(eta)` once per approach: when the ETA first falls within `horizon_s`.
    pub fn predict(&mut self, value: f64, level: f64, horizon_s: f64) -> Option<f64> {
        match self.eta(value, level) {
            Some(eta) if eta <= horizon_s => {
                if self.armed {
                    self.armed = false;
                    return Some(eta);
                }
                None
            }
            _ => {
                self.armed = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: u64 = 1_000_000_000;

    #[test]
    fn hovering_at_the_limit_fires_once() {
        let mut g = Gate::new(80.0, 76.0, 0);
        let fired: Vec<_> = (0..100).filter_map(|i| g.update(if i % 2 == 0 { 80.5 } else { 79.5 }, i * S)).collect();
        assert_eq!(fired, vec![Transition::Trigger]);
    }

    #[test]
    fn flapping_is_limited_by_cooldown() {
        let mut g = Gate::new(80.0, 76.0, 10 * S);
        // 70 / 85 alternating every 100 ms for 5 s: one trigger, one clear.
        let fired: Vec<_> =
            (0..50).filter_map(|i| g.update(if i % 2 == 0 { 85.0 } else { 70.0 }, i * S / 10)).collect();
        assert_eq!(fired, vec![Transition::Trigger, Transition::Clear]);
        // Held back during the cooldown, fires when it ends if still high.
        assert_eq!(g.update(85.0, 9 * S), None);
        assert!(g.is_pending());
        assert_eq!(g.update(85.0, 11 * S), Some(Transition::Trigger));
    }

    #[test]
    fn trend_predicts_once() {
        let mut t = Trend::default();
        let mut hits = vec![];
        for i in 0..20u64 {
            let v = 50.0 + 2.0 * i as f64; // 2 units/s, reaches 80 at i = 15
            t.update(i * S, v);
            if let Some(eta) = t.predict(v, 80.0, 5.0) {
                hits.push((i, eta));
            }
        }
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].0, 10);
        assert!((hits[0].1 - 5.0).abs() < 0.01);
    }
}
