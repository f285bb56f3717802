//! The clock.

use std::time::SystemTime;

use crate::time::rfc3339_nano;

/// The current time, formatted by [`rfc3339_nano`].
pub fn now_rfc3339_nano() -> String {
    rfc3339_nano(SystemTime::now())
}
