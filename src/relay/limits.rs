//! Enforcing [`Limits`]: per-connection rate limits and the checks an event passes
//! before its signature is verified.

use std::time::Instant;

use eventstore::{Event, Filter, Timestamp};

use crate::config::Limits;

/// A token bucket: `rate` per second, bursts of `2 × rate`.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u32) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last: Instant::now(),
        }
    }

    /// Takes one token, or says no.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Checks the limits that do not need the signature: size, tags, `created_at` bounds.
/// The message carries its NIP-01 prefix. (Who may publish is `policy.rs`'s business.)
pub fn check_event(limits: &Limits, e: &Event, now: Timestamp) -> Result<(), String> {
    if e.json_len() > limits.max_event_bytes {
        return Err(format!(
            "invalid: event is {} bytes; the limit is {}",
            e.json_len(),
            limits.max_event_bytes
        ));
    }
    if e.tags().len() > limits.max_event_tags {
        return Err(format!(
            "invalid: event has {} tags; the limit is {}",
            e.tags().len(),
            limits.max_event_tags
        ));
    }
    let t = e.created_at().0;
    if t > now.0.saturating_add(limits.created_at_upper_limit) {
        return Err(format!(
            "invalid: created_at is more than {} seconds in the future",
            limits.created_at_upper_limit
        ));
    }
    if limits.created_at_lower_limit > 0 && t < now.0.saturating_sub(limits.created_at_lower_limit)
    {
        return Err(format!(
            "invalid: created_at is more than {} seconds in the past",
            limits.created_at_lower_limit
        ));
    }
    Ok(())
}

/// Applies the `limit` policy to a REQ filter: clamp to `max_limit`, and give
/// `default_limit` to a filter that has none.
pub fn clamp_filter(limits: &Limits, f: &mut Filter) {
    f.limit = Some(
        f.limit
            .unwrap_or(limits.default_limit)
            .min(limits.max_limit),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refuses() {
        let mut b = Bucket::new(5);
        let allowed = (0..100).filter(|_| b.take()).count();
        // Ten in the burst, perhaps one more refilled while looping.
        assert!((10..=11).contains(&allowed), "{allowed}");
    }

    #[test]
    fn limits_are_clamped() {
        let l = Limits::default();
        let mut f = Filter::new();
        clamp_filter(&l, &mut f);
        assert_eq!(f.limit, Some(l.default_limit));
        let mut f = Filter::new().limit(1_000_000);
        clamp_filter(&l, &mut f);
        assert_eq!(f.limit, Some(l.max_limit));
        let mut f = Filter::new().limit(0);
        clamp_filter(&l, &mut f);
        assert_eq!(f.limit, Some(0));
    }
}
