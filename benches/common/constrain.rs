//! Constrained hardware for the benches (`BENCH_CONSTRAIN`): `1core` runs each measured command
//! on CPU 0 alone (`taskset -c 0`); `64m` (any `<N>m`) in a memory cgroup of that many MiB — the
//! v1 `memory` controller (`memory.limit_in_bytes`) where the machine has it, else cgroup v2's
//! `memory.max` — page cache included, as the kernel counts it. The command runs through a small
//! shell wrapper that joins the cgroup, then `exec`s it, so GNU time still measures the command
//! itself. A tool the kernel kills for memory (SIGKILL in a memory cgroup) is a result of the
//! bench, not its failure: [`oom_killed`].
//!
//! Shared by the benches through `#[path = "common/constrain.rs"] mod constrain;`.

use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};

/// A constraint the measured commands run under.
#[derive(Debug)]
pub struct Constrained {
    /// `1 core` or `64 MiB memory`.
    pub label: String,
    /// The wrapper script.
    script: PathBuf,
    /// The memory cgroup made for the bench (removed on drop).
    cgroup: Option<PathBuf>,
}

impl Constrained {
    /// The constraint `BENCH_CONSTRAIN` asks for, its wrapper written under `scratch`; `None`
    /// without the variable.
    pub fn from_env(scratch: &Path) -> Result<Option<Constrained>> {
        let Ok(spec) = std::env::var("BENCH_CONSTRAIN") else {
            return Ok(None);
        };
        let script = scratch.join("constrain.sh");
        let (label, cgroup, body) = if spec == "1core" {
            (
                "1 core (taskset -c 0)".to_owned(),
                None,
                "exec taskset -c 0 \"$@\"\n".to_owned(),
            )
        } else if let Some(mib) = spec.strip_suffix('m').and_then(|n| n.parse::<u64>().ok()) {
            let cg = make_memory_cgroup(mib)?;
            (
                format!("{mib} MiB memory cgroup"),
                Some(cg.clone()),
                format!("echo $$ > '{}/cgroup.procs'\nexec \"$@\"\n", cg.display()),
            )
        } else {
            bail!("BENCH_CONSTRAIN={spec}: use 1core or <N>m (e.g. 64m)");
        };
        fs::write(
            &script,
            format!("#!/bin/sh\n# bench constraint: {label}\n{body}"),
        )?;
        Ok(Some(Constrained {
            label,
            script,
            cgroup,
        }))
    }

    /// `program args…` as run under the constraint.
    pub fn wrap(&self, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
        let mut a = vec![
            self.script.display().to_string(),
            program.display().to_string(),
        ];
        a.extend(args.iter().cloned());
        (PathBuf::from("/bin/sh"), a)
    }

    /// Whether the constraint limits memory (so that a SIGKILL is the kernel's OOM kill).
    pub fn limits_memory(&self) -> bool {
        self.cgroup.is_some()
    }
}

impl Drop for Constrained {
    fn drop(&mut self) {
        if let Some(cg) = &self.cgroup {
            let _ = fs::remove_dir(cg);
        }
    }
}

/// A memory cgroup of `mib` MiB for this bench.
fn make_memory_cgroup(mib: u64) -> Result<PathBuf> {
    let bytes = (mib << 20).to_string();
    let name = format!("bootc-image-bench-{}", std::process::id());
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let (dir, limit) = if v1.join("memory.limit_in_bytes").exists() {
        (v1.join(&name), "memory.limit_in_bytes")
    } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        (Path::new("/sys/fs/cgroup").join(&name), "memory.max")
    } else {
        bail!("no memory cgroup controller on this machine");
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join(limit), &bytes).with_context(|| format!("{}/{limit}", dir.display()))?;
    // No swap to fall back on where the controller can say so.
    let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), &bytes);
    let _ = fs::write(dir.join("memory.swap.max"), "0");
    Ok(dir)
}

/// Whether a failed run's message says the process was killed by SIGKILL (in a memory cgroup:
/// the OOM killer): killed itself, or GNU time's exit status for a child killed so (128 + 9).
pub fn oom_killed(message: &str) -> bool {
    message.contains("signal: 9") || message.contains("SIGKILL") || message.contains("status: 137")
}
