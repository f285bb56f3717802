//! One fixture's runs in the copy benches (`copy_to_storage`, `scale`): per run, a fresh store for
//! the peer (skopeo, or a baseline build of bootc-image in an A/B) and then one for us, each
//! command timed from a cold page cache (`measure::settle`) and checked to have stored the image.
//!
//! Shared by the benches through `#[path = "common/copy_runs.rs"] mod copy_runs;` (with
//! `fixtures`, `measure` and `storefs` beside it).

use crate::fixtures::{FixtureInfo, IMAGE_NAME, check_store};
use crate::measure::{self, Sample, ToolResult, overlay_store_args, settle};
use crate::storefs::StoreFs;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Whom we are measured against.
#[derive(Debug, Clone)]
pub enum Peer {
    /// `skopeo copy`.
    Skopeo,
    /// Another build of bootc-image (an A/B).
    Baseline(PathBuf),
}

/// A timed command: the program and its arguments, run as the bench wants (constrained or not).
pub type RunUnder<'a> = dyn Fn(&Path, &[String]) -> Result<Result<Sample, String>> + 'a;

/// What the runs of one fixture need.
pub struct CopyBench<'a> {
    /// Where the stores go.
    pub store_fs: &'a StoreFs,
    /// Our binary.
    pub ours: &'a Path,
    /// The peer, if it is there.
    pub peer: Option<&'a Peer>,
    /// Runs a timed command.
    pub run_under: &'a RunUnder<'a>,
    /// Whether a failure says the peer was killed for memory (a result, not a failure).
    pub peer_oom: &'a dyn Fn(&str) -> bool,
    /// Deletes the store of that name (and whatever else the bench does then).
    pub clean: &'a dyn Fn(&str) -> Result<()>,
}

/// The runs of one fixture.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The peer's results (None when there is no peer).
    pub peer: Option<ToolResult>,
    /// Ours.
    pub ours: ToolResult,
    /// The peer was killed for memory.
    pub peer_oom: bool,
}

impl Outcome {
    /// Whether a run of either tool failed (the peer's kill for memory is a result).
    pub fn failed(&self) -> bool {
        self.ours.error.is_some() || self.peer.as_ref().is_some_and(|s| s.error.is_some())
    }

    /// The table's status: the first failure, the peer's kill for memory, "below target" when
    /// `below_target`, else "ok".
    pub fn status(&self, below_target: bool) -> String {
        if let Some(e) = &self.ours.error {
            format!("ours failed: {e}")
        } else if self.peer_oom {
            "skopeo OOM-killed".to_owned()
        } else if let Some(e) = self.peer.as_ref().and_then(|t| t.error.as_ref()) {
            format!("skopeo failed: {e}")
        } else if below_target {
            "below target".to_owned()
        } else {
            "ok".to_owned()
        }
    }
}

/// `bootc-image copy-to-storage` of `source` into the store at `root`/`runroot`.
pub fn copy_args(root: &Path, runroot: &Path, source: &str) -> Vec<String> {
    let mut args = overlay_store_args(root, runroot);
    args.extend([
        "copy-to-storage".into(),
        "--source".into(),
        source.to_string(),
        "--target".into(),
        IMAGE_NAME.into(),
    ]);
    args
}

impl CopyBench<'_> {
    /// `runs` runs of copying `source` (whose layout `info` describes), the lines printed as
    /// `label`.
    pub fn runs(
        &self,
        label: &str,
        source: &str,
        info: &FixtureInfo,
        runs: usize,
        warned: &mut bool,
    ) -> Result<Outcome> {
        let mut out = Outcome {
            peer: self.peer.map(|_| ToolResult::default()),
            ..Outcome::default()
        };
        for run in 1..=runs {
            if let (Some(peer), Some(res)) = (self.peer, out.peer.as_mut()) {
                (self.clean)("sk")?;
                let (root, runroot) = self.store_fs.store("sk");
                let (tool, args) = match peer {
                    Peer::Baseline(b) => (b.as_path(), copy_args(&root, &runroot, source)),
                    Peer::Skopeo => (
                        Path::new("skopeo"),
                        vec![
                            "copy".into(),
                            "--insecure-policy".into(),
                            source.to_string(),
                            format!(
                                "containers-storage:[overlay@{}+{}]{IMAGE_NAME}",
                                root.display(),
                                runroot.display()
                            ),
                        ],
                    ),
                };
                settle(warned, tool);
                let r = (self.run_under)(tool, &args)?
                    .and_then(|s| check_store(&root, info).map(|()| s));
                report(label, "skopeo", run, runs, &r);
                match r {
                    Err(e) if (self.peer_oom)(&e) => out.peer_oom = true,
                    r => res.record(r),
                }
                (self.clean)("sk")?;
            }
            (self.clean)("ou")?;
            let (root, runroot) = self.store_fs.store("ou");
            settle(warned, self.ours);
            let r = (self.run_under)(self.ours, &copy_args(&root, &runroot, source))?
                .and_then(|s| check_store(&root, info).map(|()| s));
            report(label, "ours", run, runs, &r);
            out.ours.record(r);
            (self.clean)("ou")?;
        }
        Ok(out)
    }
}

/// Prints one run's outcome as it happens.
fn report(label: &str, tool: &str, run: usize, runs: usize, r: &Result<Sample, String>) {
    measure::report_run(&format!("{label:8} {tool:6}"), run, runs, r, 2, "");
}
