//! The image proxy's messages on the wire: one JSON request per `SOCK_SEQPACKET` packet, one JSON
//! reply per packet, the reply's file descriptors (a pipe's read end) as `SCM_RIGHTS`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The largest request we accept (the client's own replies buffer is 32 KiB; its requests are
/// a method name and a few arguments).
const MAX_REQUEST: usize = 64 * 1024;

/// A request: `{"method": "GetBlob", "args": [1, "sha256:…", 123]}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Request {
    /// The method.
    pub method: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<Value>,
}

/// A reply. All four keys are always sent: the client's reply type has no defaults.
#[derive(Debug, Serialize)]
pub(crate) struct Reply {
    success: bool,
    value: Value,
    pipeid: u32,
    error: String,
}

impl Reply {
    /// A success carrying `value` (and, with `pipeid` ≠ 0, the fds sent beside it).
    pub(crate) fn ok(value: Value, pipeid: u32) -> Reply {
        Reply {
            success: true,
            value,
            pipeid,
            error: String::new(),
        }
    }

    /// A failure: the client shows `error`.
    pub(crate) fn failed(error: String) -> Reply {
        Reply {
            success: false,
            value: Value::Null,
            pipeid: 0,
            error,
        }
    }
}

/// The next request — or the error its bytes make, answered like any failed request — or `None`
/// at end of file (the client closed its end: we are done).
pub(crate) fn receive(socket: BorrowedFd<'_>) -> Result<Option<Result<Request>>> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let n = loop {
        match rustix::net::recv(socket, &mut buf[..], rustix::net::RecvFlags::empty()) {
            Ok((n, _)) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(Error::io(
                    "reading from",
                    "the proxy socket",
                    std::io::Error::from(e),
                ));
            }
        }
    };
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&buf[..n]).map_err(|e| {
        Error::InvalidInput(format!("a proxy request that is not a request: {e}"))
    })))
}

/// Sends `reply` with `fds` (at most two) beside it.
pub(crate) fn send(socket: BorrowedFd<'_>, reply: &Reply, fds: &[OwnedFd]) -> Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let bytes = serde_json::to_vec(reply)
        .map_err(|e| Error::Internal(format!("serializing a proxy reply: {e}")))?;
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(Error::Internal("too many descriptors for one reply".into()));
    }
    let iov = [std::io::IoSlice::new(&bytes)];
    loop {
        match rustix::net::sendmsg(socket, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(Error::io(
                    "writing to",
                    "the proxy socket",
                    std::io::Error::from(e),
                ));
            }
        }
    }
}
