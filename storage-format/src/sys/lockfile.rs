//! c/storage lock files (`pkg/lockfile`): whole-file POSIX `fcntl` record
//! locks plus a 64-byte "last writer" token that readers compare to see
//! whether the data the lock protects has changed.
//!
//! POSIX record locks belong to the *process*: two [`LockFile`]s of the same
//! path in one process do not exclude each other, and closing any fd of the
//! file (dropping a [`LockFile`]) releases the process's locks on it. The
//! caller must therefore serialise lock use between its own threads and
//! keep one [`LockFile`] per path.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::error::Result;
use crate::sys::random;

/// The size of a last-writer token.
const TOKEN_SIZE: usize = 64;

static TOKEN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh last-writer token, laid out as c/storage's `newLastWriterID`:
/// little-endian u64 Unix time in nanoseconds, little-endian u64 per-process
/// counter (1 for the first token), little-endian u32 PID, then 44 random
/// bytes.
pub fn new_token() -> [u8; 64] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let counter = TOKEN_COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1);
    let mut tok = [0u8; TOKEN_SIZE];
    tok[0..8].copy_from_slice(&nanos.to_le_bytes());
    tok[8..16].copy_from_slice(&counter.to_le_bytes());
    tok[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    random::fill(&mut tok[20..]);
    tok
}

/// Runs `f` again while it is interrupted by a signal.
fn retry_eintr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// An I/O error naming the action and the lock file.
fn sys_err(e: Errno, action: &str, path: &Path) -> crate::error::Error {
    let e = std::io::Error::from(e);
    std::io::Error::new(e.kind(), format!("{action} {}: {e}", path.display())).into()
}

/// What to call when a lock has been waited for a second: the lock file and the holder's PID.
pub type WaitNotice = fn(&Path, Option<u32>);

static WAIT_NOTICE: std::sync::OnceLock<WaitNotice> = std::sync::OnceLock::new();

/// Sets (once per process) the function told when a lock is still held by another process after a
/// second of trying; the lock is then waited for as before. The library itself prints nothing.
pub fn set_wait_notice(notice: WaitNotice) {
    let _ = WAIT_NOTICE.set(notice);
}

/// An open lock file. The file descriptor stays open for the value's
/// lifetime; dropping it closes the fd, which releases this process's locks
/// on the file.
#[derive(Debug)]
pub struct LockFile {
    fd: OwnedFd,
    path: PathBuf,
}

impl LockFile {
    fn open_with(path: &Path, flags: OFlags) -> Result<LockFile> {
        let fd = retry_eintr(|| {
            rustix::fs::open(
                path,
                flags | OFlags::CREATE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
        })
        .map_err(|e| {
            let e = std::io::Error::from(e);
            std::io::Error::new(
                e.kind(),
                format!("opening lock file {}: {e}", path.display()),
            )
        })?;
        Ok(LockFile {
            fd,
            path: path.to_owned(),
        })
    }

    /// Opens (creating it with mode 0644 if needed) a lock file for reading
    /// and writing: `O_RDWR|O_CREAT|O_CLOEXEC`. Parent directories are not
    /// created.
    pub fn open(path: &Path) -> Result<LockFile> {
        Self::open_with(path, OFlags::RDWR)
    }

    /// Opens a lock file read-only (`O_RDONLY|O_CREAT|O_CLOEXEC`), as
    /// c/storage does for read-only stores. Only [`LockFile::lock_read`]
    /// works on it.
    pub fn open_read_only(path: &Path) -> Result<LockFile> {
        Self::open_with(path, OFlags::RDONLY)
    }

    fn lock(&self, op: FlockOperation) -> Result<LockGuard<'_>> {
        // Try for a second without blocking; then tell the waiting notice (once) who holds the
        // lock, and wait as c/storage does.
        let try_op = match op {
            FlockOperation::LockShared => FlockOperation::NonBlockingLockShared,
            _ => FlockOperation::NonBlockingLockExclusive,
        };
        let start = std::time::Instant::now();
        loop {
            match rustix::fs::fcntl_lock(self.fd.as_fd(), try_op) {
                Ok(()) => return Ok(LockGuard { file: self }),
                Err(Errno::AGAIN | Errno::ACCESS | Errno::INTR) => {}
                Err(e) => return Err(sys_err(e, "locking", &self.path)),
            }
            if start.elapsed() >= std::time::Duration::from_secs(1) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(notice) = WAIT_NOTICE.get() {
            notice(&self.path, self.holder());
        }
        retry_eintr(|| rustix::fs::fcntl_lock(self.fd.as_fd(), op))
            .map_err(|e| sys_err(e, "locking", &self.path))?;
        Ok(LockGuard { file: self })
    }

    /// The PID of a process holding a POSIX lock on this file, from `/proc/locks`.
    pub fn holder(&self) -> Option<u32> {
        let st = rustix::fs::fstat(&self.fd).ok()?;
        let (major, minor) = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
        let me = std::process::id();
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        locks.lines().find_map(|l| {
            // "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(1) != Some(&"POSIX") {
                return None;
            }
            let pid: u32 = f.get(4)?.parse().ok()?;
            let mut id = f.get(5)?.split(':');
            let maj = u32::from_str_radix(id.next()?, 16).ok()?;
            let min = u32::from_str_radix(id.next()?, 16).ok()?;
            let ino: u64 = id.next()?.parse().ok()?;
            (pid != me && maj == major && min == minor && ino == st.st_ino).then_some(pid)
        })
    }

    /// Takes the exclusive lock on the whole file, waiting for other
    /// processes to release theirs (`fcntl(F_SETLKW, F_WRLCK)`).
    pub fn lock_write(&self) -> Result<LockGuard<'_>> {
        self.lock(FlockOperation::LockExclusive)
    }

    /// Takes a shared lock on the whole file, waiting for a writer to
    /// finish (`fcntl(F_SETLKW, F_RDLCK)`).
    pub fn lock_read(&self) -> Result<LockGuard<'_>> {
        self.lock(FlockOperation::LockShared)
    }

    /// Takes the exclusive lock if no other process holds a lock on the
    /// file (`fcntl(F_SETLK, F_WRLCK)`); `Ok(None)` if one does.
    pub fn try_lock_write(&self) -> Result<Option<LockGuard<'_>>> {
        match rustix::fs::fcntl_lock(self.fd.as_fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(LockGuard { file: self })),
            Err(Errno::AGAIN | Errno::ACCESS | Errno::INTR) => Ok(None),
            Err(e) => {
                let e = std::io::Error::from(e);
                Err(
                    std::io::Error::new(e.kind(), format!("locking {}: {e}", self.path.display()))
                        .into(),
                )
            }
        }
    }
}

/// A held lock; dropping it unlocks (`F_UNLCK`).
#[derive(Debug)]
pub struct LockGuard<'a> {
    file: &'a LockFile,
}

impl LockGuard<'_> {
    /// Writes a fresh [`new_token`] at offset 0 (`pwrite`), telling readers
    /// that the protected data changed. Needs the write lock and a file
    /// opened with [`LockFile::open`].
    pub fn record_write(&self) -> Result<()> {
        let tok = new_token();
        let mut done = 0;
        while done < tok.len() {
            let n =
                retry_eintr(|| rustix::io::pwrite(self.file.fd.as_fd(), &tok[done..], done as u64))
                    .map_err(|e| sys_err(e, "writing token to", &self.file.path))?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            done += n;
        }
        Ok(())
    }

    /// The token now in the file (up to 64 bytes from offset 0; empty for a
    /// lock file that was never written).
    pub fn current_token(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; TOKEN_SIZE];
        let mut done = 0;
        while done < buf.len() {
            let n = retry_eintr(|| {
                rustix::io::pread(self.file.fd.as_fd(), &mut buf[done..], done as u64)
            })
            .map_err(|e| sys_err(e, "reading token from", &self.file.path))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Nothing useful can be done if unlocking fails; closing the fd
        // (dropping the LockFile) releases the lock in any case.
        let _ =
            retry_eintr(|| rustix::fs::fcntl_lock(self.file.fd.as_fd(), FlockOperation::Unlock));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// Starts python3 holding a lockf lock on `path` for `hold` seconds;
    /// returns once the lock is held. `None` if python3 is not installed.
    fn python_holding(path: &Path, mode: &str, hold: f64) -> Option<Child> {
        let script = format!(
            "import fcntl, sys, time\n\
             f = open(sys.argv[1], 'r+')\n\
             fcntl.lockf(f, fcntl.{mode})\n\
             print('locked', flush=True)\n\
             time.sleep({hold})\n"
        );
        let mut child = match Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("python3 not found; skipping");
                return None;
            }
            Err(e) => panic!("{e}"),
        };
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        Some(child)
    }

    /// Whether python3 can take a non-blocking lock of `mode` on `path`.
    fn python_can_lock(path: &Path, mode: &str) -> Option<bool> {
        let script = format!(
            "import fcntl, sys\n\
             f = open(sys.argv[1], 'r+')\n\
             try:\n    fcntl.lockf(f, fcntl.{mode} | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(3)\n"
        );
        match Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .status()
        {
            Ok(s) => Some(match s.code() {
                Some(0) => true,
                Some(3) => false,
                other => panic!("python3 failed: {other:?}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn blocks_against_python_lockf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layers.lock");
        let lock = LockFile::open(&path).unwrap();
        let Some(mut child) = python_holding(&path, "LOCK_EX", 1.0) else {
            return;
        };
        assert!(lock.try_lock_write().unwrap().is_none());
        let start = Instant::now();
        let guard = lock.lock_write().unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "did not block: {waited:?}"
        );
        child.wait().unwrap();
        guard.record_write().unwrap();
        drop(guard);
        assert!(lock.try_lock_write().unwrap().is_some());
    }

    #[test]
    fn read_lock_waits_for_python_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        let lock = LockFile::open(&path).unwrap();
        let Some(mut child) = python_holding(&path, "LOCK_EX", 0.6) else {
            return;
        };
        let start = Instant::now();
        let guard = lock.lock_read().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(200));
        child.wait().unwrap();
        drop(guard);
    }

    #[test]
    fn python_sees_our_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let lock = LockFile::open(&path).unwrap();
        // (lock we hold, python's lock mode, python succeeds)
        let cases = [
            (None, "LOCK_EX", true),
            (Some(true), "LOCK_EX", false),
            (Some(true), "LOCK_SH", false),
            (Some(false), "LOCK_SH", true),
            (Some(false), "LOCK_EX", false),
        ];
        for (ours, mode, ok) in cases {
            let _guard = match ours {
                None => None,
                Some(true) => Some(lock.lock_write().unwrap()),
                Some(false) => Some(lock.lock_read().unwrap()),
            };
            let Some(got) = python_can_lock(&path, mode) else {
                return;
            };
            assert_eq!(got, ok, "{ours:?} {mode}");
        }
    }

    #[test]
    fn tokens() {
        let a = new_token();
        let b = new_token();
        let pid = std::process::id().to_le_bytes();
        assert_eq!(a[16..20], pid);
        let ca = u64::from_le_bytes(a[8..16].try_into().unwrap());
        let cb = u64::from_le_bytes(b[8..16].try_into().unwrap());
        assert!(cb > ca && ca >= 1);
        let ta = u64::from_le_bytes(a[0..8].try_into().unwrap());
        assert!(ta > 1_600_000_000_000_000_000);
        assert_ne!(a[20..], b[20..]);
    }

    #[test]
    fn record_write_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storage.lock");
        let lock = LockFile::open(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o7777 & !0o022, 0o644 & !0o022);
        let g = lock.lock_write().unwrap();
        assert!(g.current_token().unwrap().is_empty());
        g.record_write().unwrap();
        let t1 = g.current_token().unwrap();
        assert_eq!(t1.len(), 64);
        g.record_write().unwrap();
        let t2 = g.current_token().unwrap();
        assert_ne!(t1, t2);
        drop(g);
        assert_eq!(std::fs::read(&path).unwrap(), t2);

        let ro = LockFile::open_read_only(&path).unwrap();
        let g = ro.lock_read().unwrap();
        assert_eq!(g.current_token().unwrap(), t2);
        assert!(g.record_write().is_err());
        drop(g);
        assert!(ro.lock_write().is_err());
    }

    #[test]
    fn open_missing_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let err = LockFile::open(&dir.path().join("nope/x.lock")).unwrap_err();
        assert!(err.to_string().contains("nope/x.lock"), "{err}");
    }
}
