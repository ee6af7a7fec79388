//! The per-instance order-rate cap (`[runtime] max_orders_per_sec`, SPEC §8).
//!
//! An instance may submit `rate` orders a second, with bursts of up to
//! `rate` (a token bucket). An order over the cap is **throttled**: refused
//! with an error the strategy can catch, and counted. An instance that keeps
//! going over the cap is **failed**: once it has had [`STORM_FACTOR`] ×
//! `rate` orders refused without a whole second free of refusals in between,
//! it is an order storm, and the host stops it. A strategy that steps over
//! the cap now and then is only throttled; one that floods orders, in a loop
//! or from every fill it is told about, ends `failed` within seconds, before
//! its order reports can pile up.

use std::time::{Duration, Instant};

/// Default `[runtime] max_orders_per_sec`.
pub const DEFAULT_MAX_ORDERS_PER_SEC: u32 = 50;

/// Refused orders, in seconds' worth of the cap, that make an order storm.
pub const STORM_FACTOR: u32 = 3;

/// A quiet second (no refusal) forgives the refusals before it.
const FORGIVE_AFTER: Duration = Duration::from_secs(1);

/// What [`OrderRate::admit`] decided about one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the cap: send it.
    Sent,
    /// Over the cap: refuse it (the strategy sees an error it may catch).
    Throttled,
    /// Over the cap for too long: refuse it and fail the instance. Holds the
    /// number of orders refused in the storm.
    Storm(u32),
}

/// One instance's order-rate state.
#[derive(Debug)]
pub struct OrderRate {
    rate: u32,
    tokens: f64,
    refilled: Instant,
    refused: u32,
    last_refusal: Option<Instant>,
}

impl OrderRate {
    /// A full bucket of `rate` orders a second (`rate` is at least 1).
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = rate.max(1);
        OrderRate { rate, tokens: f64::from(rate), refilled: now, refused: 0, last_refusal: None }
    }

    /// The cap, in orders a second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Decides about one order submitted at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let capacity = f64::from(self.rate);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * capacity).min(capacity);
        self.refilled = now;
        if self.last_refusal.is_some_and(|last| now.saturating_duration_since(last) >= FORGIVE_AFTER) {
            self.refused = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Admission::Sent;
        }
        self.refused = self.refused.saturating_add(1);
        self.last_refusal = Some(now);
        if self.refused >= self.rate.saturating_mul(STORM_FACTOR) {
            Admission::Storm(self.refused)
        } else {
            Admission::Throttled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_of_the_rate_passes_then_orders_are_throttled() {
        let t0 = Instant::now();
        let mut rate = OrderRate::new(5, t0);
        for _ in 0..5 {
            assert_eq!(rate.admit(t0), Admission::Sent);
        }
        assert_eq!(rate.admit(t0), Admission::Throttled);
        // 200 ms later one token came back.
        assert_eq!(rate.admit(t0 + ms(200)), Admission::Sent);
        assert_eq!(rate.admit(t0 + ms(200)), Admission::Throttled);
    }

    #[test]
    fn a_steady_rate_at_the_cap_is_never_refused() {
        let t0 = Instant::now();
        let mut rate = OrderRate::new(50, t0);
        for i in 0..1_000u64 {
            assert_eq!(rate.admit(t0 + ms(20 * i)), Admission::Sent, "order {i}");
        }
    }

    #[test]
    fn a_tight_loop_is_a_storm_after_three_seconds_worth_of_refusals() {
        let t0 = Instant::now();
        let mut rate = OrderRate::new(50, t0);
        let decisions: Vec<Admission> = (0..200).map(|_| rate.admit(t0)).collect();
        assert!(decisions[..50].iter().all(|d| *d == Admission::Sent));
        assert!(decisions[50..199].iter().all(|d| *d == Admission::Throttled));
        assert_eq!(decisions[199], Admission::Storm(150));
    }

    #[test]
    fn going_over_now_and_then_is_forgiven_but_a_sustained_excess_is_a_storm() {
        let t0 = Instant::now();
        // Now and then: a burst of 8 every 2 s against a cap of 5 (3 refused each time).
        let mut rate = OrderRate::new(5, t0);
        for burst in 0..20u64 {
            for _ in 0..8 {
                assert!(!matches!(rate.admit(t0 + ms(2_000 * burst)), Admission::Storm(_)), "burst {burst}");
            }
        }
        // Sustained: 10 a second against a cap of 5 fails within seconds.
        let mut rate = OrderRate::new(5, t0);
        let storm_at = (0..1_000u64).find(|i| matches!(rate.admit(t0 + ms(100 * i)), Admission::Storm(_)));
        let storm_at = storm_at.expect("a sustained excess must end in a storm");
        assert!(storm_at * 100 <= 5_000, "storm only after {} ms", storm_at * 100);
    }
}
