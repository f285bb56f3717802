//! Trying again after a transient failure, as podman's `--retry` and `--retry-delay`: a bounded
//! number of attempts, a fixed delay or a doubling one starting at two seconds.

use std::time::Duration;

use crate::error::{Error, Result};

/// How often to try again, and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub retries: u32,
    /// The wait before each retry; `None` waits 2 s, then 4 s, 8 s… (podman's default).
    pub delay: Option<Duration>,
}

impl Default for RetryPolicy {
    /// podman's: three retries, backing off from two seconds.
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            delay: None,
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy {
            retries: 0,
            delay: None,
        }
    }

    /// The wait before retry number `n` (1 for the first retry).
    pub(crate) fn delay_before(&self, n: u32) -> Duration {
        self.delay
            .unwrap_or_else(|| Duration::from_secs(2u64 << n.saturating_sub(1).min(5)))
    }

    /// Runs `f` until it succeeds, fails for good, or the retries are used up; `what` names the
    /// operation in the log line of each retry.
    pub fn run<T>(&self, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut n = 0;
        loop {
            match f() {
                Err(e) if e.is_transient() && n < self.retries => {
                    n += 1;
                    let wait = self.delay_before(n);
                    tracing::warn!(
                        "{what} failed ({}); retry {n} of {} in {wait:?}",
                        one_line(&e),
                        self.retries
                    );
                    std::thread::sleep(wait);
                }
                other => return other,
            }
        }
    }
}

/// An error and its causes on one line.
pub(crate) fn one_line(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let m = c.to_string();
        if !m.is_empty() && !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_before(1), Duration::from_secs(2));
        assert_eq!(p.delay_before(3), Duration::from_secs(8));
        let fixed = RetryPolicy {
            retries: 2,
            delay: Some(Duration::from_millis(5)),
        };
        assert_eq!(fixed.delay_before(2), Duration::from_millis(5));
        let mut calls = 0;
        let r: Result<()> = fixed.run("x", || {
            calls += 1;
            Err(Error::Remote {
                image: "i".into(),
                message: "cut".into(),
                transient: true,
            })
        });
        assert!(r.is_err());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: Result<()> = fixed.run("x", || {
            calls += 1;
            Err(Error::InvalidInput("no".into()))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
