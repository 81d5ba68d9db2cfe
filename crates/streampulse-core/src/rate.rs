//! A token bucket: `rate` tokens a second, at most `burst` saved up. The metadata API enforces its
//! limit with one and the sync paces itself with another, so both sides agree on what "50
//! requests a second" means.
//!
//! Time is tokio's, so tests drive it with `tokio::time::pause()`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
    /// Nobody takes a token before this (the server asked us to back off).
    paused_until: Instant,
}

/// A shared token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

impl TokenBucket {
    /// A bucket that starts full. `rate` > 0 tokens a second, `burst` ≥ 1.
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        let now = Instant::now();
        TokenBucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: now,
                paused_until: now,
            }),
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes a token now, or says how long until one is available.
    pub fn try_take(&self) -> Result<(), Duration> {
        self.try_take_at(Instant::now())
    }

    /// [`TokenBucket::try_take`] at a given instant (time is a parameter so tests need no clock).
    pub fn try_take_at(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now < s.paused_until {
            return Err(s.paused_until - now);
        }
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate).min(self.burst);
        s.last = s.last.max(now);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.tokens) / self.rate))
        }
    }

    /// Waits for a token and takes it.
    pub async fn acquire(&self) {
        while let Err(wait) = self.try_take() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Stops handing out tokens for `pause` (a server's `Retry-After`), and empties the bucket so
    /// that the requests after the pause do not arrive as one burst.
    pub fn pause(&self, pause: Duration) {
        self.pause_at(pause, Instant::now());
    }

    pub fn pause_at(&self, pause: Duration, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = now + pause;
        if until > s.paused_until {
            s.paused_until = until;
        }
        s.tokens = 0.0;
        s.last = s.paused_until;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn paces_at_the_rate_after_the_burst() {
        let bucket = TokenBucket::new(50.0, 5.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(
                bucket.try_take_at(t0).is_ok(),
                "the burst is available at once"
            );
        }
        let wait = bucket.try_take_at(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.02).abs() < 1e-6, "{wait:?}");
        // Then one token every 20 ms: 100 tokens over 2 s, not more.
        let granted = (1..=2000)
            .filter(|&i| bucket.try_take_at(ms(t0, i)).is_ok())
            .count();
        assert_eq!(granted, 100);
    }

    #[test]
    fn saved_tokens_are_capped_at_the_burst() {
        let bucket = TokenBucket::new(10.0, 3.0);
        let t0 = Instant::now();
        let later = ms(t0, 60_000);
        let granted = (0..10)
            .filter(|_| bucket.try_take_at(later).is_ok())
            .count();
        assert_eq!(granted, 3);
    }

    #[test]
    fn a_pause_holds_every_taker_then_resumes_without_a_burst() {
        let bucket = TokenBucket::new(100.0, 50.0);
        let t0 = Instant::now();
        bucket.pause_at(Duration::from_secs(2), t0);
        let wait = bucket.try_take_at(ms(t0, 500)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(1500));
        assert!(
            bucket.try_take_at(ms(t0, 2000)).is_err(),
            "the bucket was emptied"
        );
        assert!(
            bucket.try_take_at(ms(t0, 2010)).is_ok(),
            "one token after 10 ms"
        );
        assert!(bucket.try_take_at(ms(t0, 2010)).is_err(), "and only one");
    }
}
