//! Which package owns each file, from dpkg's file lists (`<info dir>/<package>[:<arch>].list`: one
//! absolute path per line, as dpkg installed it). Debian 12 is merged-/usr: a list names
//! `/bin/bash`, the tree holds `usr/bin/bash` behind the `bin` → `usr/bin` symlink, so listed paths
//! are resolved through the tree's directory symlinks.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Where dpkg's database may be: the usual place, and where bootc-style images keep it read-only.
pub(crate) const INFO_DIRS: [&str; 3] = [
    "var/lib/dpkg/info",
    "usr/lib/dpkg/info",
    "usr/share/dpkg/info",
];

/// Package ownership of a tree.
#[derive(Debug, Clone, Default)]
pub struct Packages {
    /// Package names, sorted.
    pub names: Vec<String>,
    /// Path (relative, resolved) → index in `names` of the first package (by name) listing it.
    pub owner: HashMap<Vec<u8>, usize>,
    /// The info directory read, relative to the root.
    pub info_dir: &'static str,
    /// File lists that are not regular files (a directory, a dangling symlink, a FIFO), relative
    /// to the root: skipped, so the files they would list count as unowned.
    pub skipped: Vec<String>,
}

/// Resolves the directory components of `path` through the tree's symlinks (`links`: path →
/// target), as the kernel would inside the root; the last component is kept as it is.
pub(crate) fn resolve_dirs(path: &[u8], links: &HashMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect();
    let Some(last) = parts.pop() else {
        return Vec::new();
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    let mut queue: std::collections::VecDeque<Vec<u8>> = parts.into();
    while let Some(c) = queue.pop_front() {
        if c == b".." {
            out.pop();
            continue;
        }
        out.push(c);
        let here = out.join(&b'/');
        if let Some(target) = links.get(&here) {
            hops += 1;
            if hops > 40 {
                break;
            }
            out.pop();
            if target.starts_with(b"/") {
                out.clear();
            }
            for t in target.split(|&b| b == b'/').rev() {
                if !t.is_empty() && t != b"." {
                    queue.push_front(t.to_vec());
                }
            }
        }
    }
    out.push(last);
    out.join(&b'/')
}

/// Reads the file lists of the first dpkg database found under `root`; `None` when there is none.
pub fn read(root: &Path, links: &HashMap<Vec<u8>, Vec<u8>>) -> Result<Option<Packages>> {
    for info_dir in INFO_DIRS {
        let dir = root.join(info_dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("reading", &dir, e)),
        };
        let mut lists: Vec<(String, std::path::PathBuf)> = Vec::new();
        for e in entries {
            let e = e.map_err(|e| Error::io("reading", &dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".list") {
                let pkg = stem.split(':').next().unwrap_or(stem).to_string();
                lists.push((pkg, e.path()));
            }
        }
        if lists.is_empty() {
            continue;
        }
        lists.sort();
        let mut packages = Packages {
            info_dir,
            ..Packages::default()
        };
        for (pkg, list) in lists {
            if packages.names.last() != Some(&pkg) {
                packages.names.push(pkg);
            }
            let index = packages.names.len() - 1;
            // Not blocking on a FIFO, not following a link out of the info directory; a list
            // that is no regular file lists nothing (podman build takes such a tree as it is).
            let name = list.file_name().map(Path::new).unwrap_or(Path::new(""));
            let text = match crate::fsutil::open_regular(Some(&dir), name) {
                Ok(f) => {
                    let mut text = Vec::new();
                    std::io::Read::read_to_end(&mut &f, &mut text)
                        .map_err(|e| Error::read(list.display().to_string(), e))?;
                    text
                }
                Err(e) if skippable(&e) => {
                    packages
                        .skipped
                        .push(format!("{info_dir}/{}", name.display()));
                    continue;
                }
                Err(e) => return Err(Error::read(list.display().to_string(), e)),
            };
            for line in text.split(|&b| b == b'\n') {
                let resolved = resolve_dirs(line, links);
                if !resolved.is_empty() {
                    packages.owner.entry(resolved).or_insert(index);
                }
            }
        }
        return Ok(Some(packages));
    }
    Ok(None)
}

/// Whether opening a file list failed because it is no regular file inside the info directory
/// (rather than for want of permission or a broken disk).
fn skippable(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    e.kind() == std::io::ErrorKind::InvalidInput
        || e.kind() == std::io::ErrorKind::NotFound
        || [Errno::XDEV, Errno::LOOP, Errno::ISDIR, Errno::NOTDIR]
            .iter()
            .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

#[cfg(test)]
mod tests {
    use super::resolve_dirs;
    use std::collections::HashMap;

    #[test]
    fn merged_usr() {
        let mut links = HashMap::new();
        links.insert(b"bin".to_vec(), b"usr/bin".to_vec());
        links.insert(b"lib64".to_vec(), b"/usr/lib64".to_vec());
        links.insert(b"usr/lib/x".to_vec(), b"../share/y".to_vec());
        assert_eq!(resolve_dirs(b"/bin/bash", &links), b"usr/bin/bash");
        assert_eq!(resolve_dirs(b"/lib64/ld.so", &links), b"usr/lib64/ld.so");
        assert_eq!(resolve_dirs(b"/usr/lib/x/f", &links), b"usr/share/y/f");
        assert_eq!(resolve_dirs(b"/bin", &links), b"bin");
        assert_eq!(resolve_dirs(b"/.", &links), b"");
    }
}
