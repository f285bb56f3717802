//! Asking the registry for the next blobs before they are read: when a layer's blob is opened, the
//! next ones the import will read (it says which, [`crate::layer::BlobSource::will_fetch`]) are
//! requested on connections of their own, so the registry has found and started sending them —
//! into the kernel's socket buffers, not our memory — by the time a layer worker turns to them.
//! Only blobs the import announced are asked for: a layer the store has is never fetched.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use storage_format::Digest;

use super::client::Repo;
use crate::error::{Error, Result};

/// How many requests run ahead of the blobs being read.
const AHEAD: usize = 2;

/// The answer to one request made ahead, once it came.
type Answer = Result<ureq::http::Response<ureq::Body>>;

/// One request made ahead: its answer when it has come.
#[derive(Default)]
struct Slot {
    answer: Mutex<Option<Answer>>,
    came: Condvar,
}

impl Slot {
    /// Gives the answer to whoever waits for it.
    fn fill(&self, answer: Answer) {
        if let Ok(mut a) = self.answer.lock() {
            *a = Some(answer);
            self.came.notify_all();
        }
    }
}

/// The blobs still to be read, in order, and the requests made ahead.
#[derive(Default)]
struct Queue {
    pending: VecDeque<Digest>,
    ahead: HashMap<Digest, Arc<Slot>>,
}

/// Requests made ahead for one image.
#[derive(Default)]
pub(crate) struct Prefetch {
    queue: Mutex<Queue>,
}

impl Prefetch {
    /// The blobs the import will read, in the order it reads them.
    pub(crate) fn announce(&self, digests: &[Digest]) {
        if let Ok(mut q) = self.queue.lock() {
            q.pending = digests.iter().cloned().collect();
        }
    }

    /// The answer to `GET blobs/<digest>` when it was asked ahead (waiting for it if it has not
    /// come yet), `None` otherwise; either way, the next announced blobs are asked for.
    pub(crate) fn take(&self, repo: &Arc<Repo>, image: &str, digest: &Digest) -> Option<Answer> {
        let slot = {
            let Ok(mut q) = self.queue.lock() else {
                return None;
            };
            q.pending.retain(|d| d != digest);
            let slot = q.ahead.remove(digest);
            while q.ahead.len() < AHEAD
                && let Some(next) = q.pending.pop_front()
            {
                let s = Arc::new(Slot::default());
                q.ahead.insert(next.clone(), s.clone());
                let (repo, image, slot) = (repo.clone(), image.to_string(), s.clone());
                let spawned =
                    std::thread::Builder::new()
                        .name("blob-ahead".into())
                        .spawn(move || {
                            // A panic still fills the slot: nobody waits for nothing.
                            let answer =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    repo.get(&format!("blobs/{next}"), None, &image)
                                }))
                                .unwrap_or_else(|_| {
                                    Err(Error::Internal(
                                        "a blob request made ahead panicked".into(),
                                    ))
                                });
                            slot.fill(answer);
                        });
                if let Err(e) = spawned {
                    s.fill(Err(Error::Internal(format!(
                        "starting a blob request ahead: {e}"
                    ))));
                }
            }
            slot
        }?;
        let mut answer = slot.answer.lock().ok()?;
        loop {
            if let Some(a) = answer.take() {
                return Some(a);
            }
            answer = match slot.came.wait(answer) {
                Ok(a) => a,
                Err(_) => {
                    return Some(Err(Error::Internal(
                        "a blob request made ahead was lost".into(),
                    )));
                }
            };
        }
    }
}
