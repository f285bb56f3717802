//! Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, a random port, plain HTTP marked
//! insecure in a registries.conf of its own; the images pushed with skopeo.
//!
//! Shared by the benches through `#[path = "common/registry.rs"] mod registry;`.

use anyhow::{Context, Result, bail};
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tag every bench layout has.
const TAG: &str = "bench";

/// The registry, stopped on drop.
pub struct Registry {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// A registries.conf marking it insecure (plain HTTP).
    pub conf: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry keeping its data under `dir`.
    pub fn start(dir: &Path) -> Result<Registry> {
        Self::start_logged(dir, None)
    }

    /// Starts a registry keeping its data under `dir`, its access log (combined format: the
    /// bytes of each answer) appended to `log` when given.
    pub fn start_logged(dir: &Path, log: Option<&Path>) -> Result<Registry> {
        fs::create_dir_all(dir.join("data"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            log.is_none(),
            dir.join("data").display()
        );
        fs::write(dir.join("config.yml"), config)?;
        let conf = dir.join("registries.conf");
        fs::write(
            &conf,
            format!("[[registry]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = true\n"),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(match log {
                Some(l) => Stdio::from(fs::OpenOptions::new().create(true).append(true).open(l)?),
                None => Stdio::null(),
            })
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (apt install docker-registry)")?;
        let r = Registry { child, port, conf };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the registry did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(r)
    }

    /// The reference of `repo` (tagged `TAG`) in it.
    pub fn image(&self, repo: &str) -> String {
        format!("127.0.0.1:{}/bench/{repo}:{TAG}", self.port)
    }

    /// Pushes the layout's `TAG` image as `repo` (with skopeo).
    pub fn push(&self, layout: &Path, repo: &str) -> Result<()> {
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--insecure-policy",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{TAG}", layout.display()))
            .arg(format!("docker://{}", self.image(repo)))
            .output()?;
        if !out.status.success() {
            bail!(
                "pushing {repo}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}
