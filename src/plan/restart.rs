//! When to start a postmaster again after it died without being asked to stop.

use std::time::{Duration, Instant};

/// Back-off and crash-loop limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay after the first crash in the window.
    pub initial: Duration,
    /// The delay doubles with each further crash in the window, up to this.
    pub max: Duration,
    /// Crashes older than this are forgiven.
    pub window: Duration,
    /// This many crashes in the window make a crash loop, which is reported as such.
    pub loop_after: usize,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            window: Duration::from_secs(120),
            loop_after: 3,
        }
    }
}

/// What to do after a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    pub delay: Duration,
    /// Crashes inside the window, this one included.
    pub recent: usize,
    pub crash_loop: bool,
}

/// The decision after a crash at `now`, given the times of the crashes before it.
pub fn after_crash(policy: &RestartPolicy, earlier: &[Instant], now: Instant) -> Restart {
    let recent = 1 + earlier
        .iter()
        .filter(|&&t| t <= now && now.duration_since(t) < policy.window)
        .count();
    let doublings = u32::try_from(recent - 1).unwrap_or(u32::MAX).min(31);
    let delay = policy
        .initial
        .checked_mul(1 << doublings)
        .map_or(policy.max, |d| d.min(policy.max));
    Restart {
        delay,
        recent,
        crash_loop: recent >= policy.loop_after,
    }
}

/// When a crash loop at `now` ends by itself, given the times of its crashes: once fewer than
/// `loop_after` of them are inside the window. None when there is no loop at `now`.
pub fn crash_loop_ends(
    policy: &RestartPolicy,
    crashes: &[Instant],
    now: Instant,
) -> Option<Instant> {
    let mut recent: Vec<Instant> = crashes
        .iter()
        .copied()
        .filter(|&t| t <= now && now.duration_since(t) < policy.window)
        .collect();
    recent.sort();
    let first_to_go = recent.len().checked_sub(policy.loop_after)?;
    Some(recent[first_to_go] + policy.window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_crash_restarts_quickly_and_is_not_a_loop() {
        let now = Instant::now();
        let r = after_crash(&RestartPolicy::default(), &[], now);
        assert_eq!(r.delay, Duration::from_millis(200));
        assert!(!r.crash_loop);
    }

    #[test]
    fn repeated_crashes_back_off_and_become_a_loop() {
        let p = RestartPolicy::default();
        let now = Instant::now() + Duration::from_secs(10);
        let earlier = [now - Duration::from_secs(2), now - Duration::from_secs(1)];
        let r = after_crash(&p, &earlier, now);
        assert_eq!(r.delay, Duration::from_millis(800));
        assert_eq!(r.recent, 3);
        assert!(r.crash_loop);
    }

    #[test]
    fn old_crashes_are_forgiven() {
        let p = RestartPolicy::default();
        let now = Instant::now() + Duration::from_secs(1000);
        let earlier = [
            now - Duration::from_secs(500),
            now - Duration::from_secs(121),
        ];
        let r = after_crash(&p, &earlier, now);
        assert_eq!(r.recent, 1);
        assert!(!r.crash_loop);
    }

    #[test]
    fn a_crash_loop_ends_once_its_crashes_leave_the_window() {
        let p = RestartPolicy::default();
        let now = Instant::now() + Duration::from_secs(1000);
        let at = |s: u64| now - Duration::from_secs(s);
        assert_eq!(crash_loop_ends(&p, &[at(3), at(2)], now), None);
        // Four crashes: the loop lasts until the second oldest is forgiven.
        let crashes = [at(10), at(30), at(20), at(5)];
        assert_eq!(crash_loop_ends(&p, &crashes, now), Some(at(20) + p.window));
        let after = at(20) + p.window + Duration::from_millis(1);
        assert_eq!(crash_loop_ends(&p, &crashes, after), None);
    }

    proptest! {
        #[test]
        fn delay_is_bounded_and_grows_with_crashes(ages in proptest::collection::vec(0u64..300, 0..50)) {
            let p = RestartPolicy::default();
            let now = Instant::now() + Duration::from_secs(400);
            let earlier: Vec<Instant> = ages.iter().map(|&a| now - Duration::from_secs(a)).collect();
            let r = after_crash(&p, &earlier, now);
            prop_assert!(r.delay >= p.initial && r.delay <= p.max);
            let fewer = after_crash(&p, &earlier[..earlier.len() / 2], now);
            prop_assert!(fewer.delay <= r.delay);
            prop_assert_eq!(r.crash_loop, r.recent >= p.loop_after);
        }
    }
}
