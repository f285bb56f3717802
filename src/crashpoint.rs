//! Named points in the store's write and delete sequences where the torture tests kill us.
//!
//! `BOOTC_IMAGE_CRASH_AT=NAME` (or `NAME:N`, the N-th time that point is passed, from 1) makes the
//! process send itself SIGKILL there: no destructor, no rollback, exactly as a power cut or an
//! OOM kill would stop it. Without the variable a point costs one relaxed atomic load.
//! The points are listed in `docs/reliability.md`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// The variable that names the point to die at.
pub(crate) const CRASH_ENV: &str = "BOOTC_IMAGE_CRASH_AT";

static ARMED: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on
static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSED: Mutex<Option<HashMap<&'static str, u64>>> = Mutex::new(None);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let v = std::env::var(CRASH_ENV).ok()?;
        match v.rsplit_once(':') {
            Some((name, n)) if n.parse::<u64>().is_ok() => {
                Some((name.to_string(), n.parse().unwrap_or(1)))
            }
            _ => Some((v, 1)),
        }
    })
}

/// Passes the crash point `name`: kills this process if the environment asks for it here.
pub fn hit(name: &'static str) {
    match ARMED.load(Ordering::Relaxed) {
        1 => return,
        0 => {
            let on = target().is_some();
            ARMED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            if !on {
                return;
            }
        }
        _ => {}
    }
    let Some((want, nth)) = target() else {
        return;
    };
    if want != name {
        return;
    }
    let count = {
        let Ok(mut passed) = PASSED.lock() else {
            return;
        };
        let map = passed.get_or_insert_with(HashMap::new);
        let c = map.entry(name).or_insert(0);
        *c += 1;
        *c
    };
    if count == *nth {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
