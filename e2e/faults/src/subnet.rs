//! The replica processes of a run: genesis with `thicket genesis`, each replica started with
//! `thicket replica run` in its own namespace with its data directory on a tmpfs of its own (a
//! disk that can be filled), under libfaketime (a clock that can be skewed), and supervised as
//! a kubelet would: a replica that exits (killed, or stopped by a full disk) starts again
//! after [`RESTART_AFTER`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::net::{HTTP_PORT, P2P_PORT, namespace, replica_ip};

/// Debian's libfaketime (package faketime).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A replica that exited starts again this long after (a kubelet's first back-off).
pub const RESTART_AFTER: Duration = Duration::from_secs(2);

/// Size of each replica's disk: room for a few checkpoints of the run's small state.
const DISK_MIB: u64 = 512;

/// Makes sure the tools a run needs are installed (Debian's packages; idempotent).
pub fn install_tools() -> anyhow::Result<()> {
    let have = |bin: &str| {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(bin).exists())
    };
    let faketime = std::path::Path::new(FAKETIME_LIB).exists();
    if have("iptables") && have("ip") && faketime {
        return Ok(());
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let packages = ["install", "-y", "-q", "iptables", "iproute2", "faketime"];
    let installed = apt(&packages) || (apt(&["update", "-q"]) && apt(&packages));
    if !installed {
        bail!("installing iptables, iproute2 and faketime with apt-get failed");
    }
    Ok(())
}

pub struct Replica {
    pub i: usize,
    pub data: PathBuf,
    pub log: PathBuf,
    /// libfaketime's offset file (`+0`, `+30s`, `-20s`), read at most once a second.
    skew: PathBuf,
    child: Option<Child>,
    /// When the process was found gone (it starts again [`RESTART_AFTER`] later).
    exited_at: Option<Instant>,
    pub paused: bool,
    /// The command it runs instead of `thicket replica run` (a Byzantine replica's), whose
    /// arguments follow.
    pub program: Option<Vec<std::ffi::OsString>>,
    pub starts: u32,
    pub exits: Vec<String>,
}

pub struct Subnet {
    pub dir: PathBuf,
    thicket: PathBuf,
    genesis: PathBuf,
    pub replicas: Vec<Replica>,
    /// Hex DER of the subnet's public key (the root key for agents).
    pub root_key: Vec<u8>,
    /// Whether processes start under libfaketime (only runs that skew clocks need it).
    faketime: bool,
}

pub fn http_url(i: usize) -> String {
    format!("http://{}:{HTTP_PORT}", replica_ip(i))
}

fn p2p_url(i: usize) -> String {
    format!("http://{}:{P2P_PORT}", replica_ip(i))
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Subnet {
    /// Genesis for `n` replicas in `dir` (which must not exist yet); nothing runs yet.
    pub fn genesis(
        dir: &Path,
        thicket: &Path,
        n: usize,
        timing: &[String],
        faketime: bool,
    ) -> anyhow::Result<Subnet> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let mut replicas = Vec::new();
        for i in 0..n {
            let data = dir.join(format!("replica-{i}"));
            std::fs::create_dir_all(&data)?;
            run(Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={DISK_MIB}m,mode=0700"))
                .arg("tmpfs")
                .arg(&data))?;
            let skew = dir.join(format!("logs/skew-{i}"));
            std::fs::write(&skew, "+0\n")?;
            replicas.push(Replica {
                i,
                data,
                log: dir.join(format!("logs/replica-{i}.log")),
                skew,
                child: None,
                exited_at: None,
                paused: false,
                program: None,
                starts: 0,
                exits: Vec::new(),
            });
        }
        let mut cmd = Command::new(thicket);
        cmd.arg("genesis").arg("--data-dir").arg(dir);
        for i in 0..n {
            cmd.args(["--p2p-url", &p2p_url(i)]);
        }
        cmd.args(timing);
        let out: serde_json::Value =
            serde_json::from_str(&run(&mut cmd)?).context("`thicket genesis` printed no JSON")?;
        let root_key = out["public_key"]
            .as_str()
            .and_then(|k| hex::decode(k).ok())
            .context("`thicket genesis` printed no public key")?;
        Ok(Subnet {
            dir: dir.to_path_buf(),
            thicket: thicket.to_path_buf(),
            genesis: dir.join("genesis.bin"),
            replicas,
            root_key,
            faketime,
        })
    }

    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    /// Starts replica i in its namespace.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let n = self.n();
        let r = &mut self.replicas[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &namespace(i), "env"]);
        if self.faketime {
            cmd.arg(format!("LD_PRELOAD={FAKETIME_LIB}"))
                .arg(format!("FAKETIME_TIMESTAMP_FILE={}", r.skew.display()))
                .args([
                    "FAKETIME_CACHE_DURATION=1",
                    "FAKETIME_DONT_FAKE_MONOTONIC=1",
                    "DONT_FAKE_MONOTONIC=1",
                ]);
        }
        match &r.program {
            Some(program) => cmd.args(program),
            None => cmd.arg(&self.thicket).args(["replica", "run"]),
        };
        cmd.arg("--data-dir")
            .arg(&r.data)
            .arg("--genesis")
            .arg(&self.genesis)
            .args(["--listen", &format!("{}:{P2P_PORT}", replica_ip(i))])
            .args(["--http-listen", &format!("{}:{HTTP_PORT}", replica_ip(i))]);
        for j in (0..n).filter(|j| *j != i) {
            cmd.args(["--peer", &format!("{j}={}", p2p_url(j))]);
        }
        // `ip netns exec` and `env` exec the replica: the child's pid is the replica's.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a replica")?;
        r.child = Some(child);
        r.exited_at = None;
        r.paused = false;
        r.starts += 1;
        Ok(())
    }

    fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let Some(child) = &self.replicas[i].child else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .output();
        Ok(())
    }

    /// kill -9: the supervisor starts it again.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "KILL")
    }

    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "STOP")?;
        self.replicas[i].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "CONT")?;
        self.replicas[i].paused = false;
        Ok(())
    }

    /// Moves replica i's clock by `secs` (negative: behind); 0 sets it right again.
    pub fn skew(&self, i: usize, secs: i64) -> anyhow::Result<()> {
        let spec = if secs >= 0 {
            format!("+{secs}s\n")
        } else {
            format!("{secs}s\n")
        };
        Ok(std::fs::write(&self.replicas[i].skew, spec)?)
    }

    fn filler(&self, i: usize) -> PathBuf {
        self.replicas[i].data.join("filler")
    }

    /// Fills replica i's disk to the last byte.
    pub fn fill_disk(&self, i: usize) -> anyhow::Result<()> {
        let path = self.filler(i);
        let _ = run(Command::new("fallocate")
            .args(["-l", &format!("{DISK_MIB}M")])
            .arg(&path));
        // fallocate refuses more than is free; whatever it did not take, writing takes.
        let _ = run(Command::new("dd")
            .args(["if=/dev/zero", "bs=64k", "status=none"])
            .arg(format!("of={}", path.display()))
            .arg("oflag=append")
            .arg("conv=notrunc"));
        Ok(())
    }

    pub fn free_disk(&self, i: usize) -> anyhow::Result<()> {
        let path = self.filler(i);
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }

    /// The supervisor's round: notes replicas that exited and starts those due again.
    pub fn supervise(&mut self) -> anyhow::Result<()> {
        for i in 0..self.n() {
            let r = &mut self.replicas[i];
            if let Some(child) = &mut r.child
                && let Ok(Some(status)) = child.try_wait()
            {
                r.exits.push(status.to_string());
                r.child = None;
                r.exited_at = Some(Instant::now());
            }
            if r.exited_at.is_some_and(|t| t.elapsed() >= RESTART_AFTER) {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Whether every replica process runs (none waits for a restart, none is paused).
    pub fn all_running(&self) -> bool {
        self.replicas.iter().all(|r| r.child.is_some() && !r.paused)
    }

    /// The last lines of replica i's log (for a report that needs them).
    /// Replica i's peak resident memory (VmHWM) since it last started, MiB.
    pub fn peak_rss_mib(&self, i: usize) -> Option<u64> {
        let pid = self.replicas[i].child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024)
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.replicas[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops every replica (SIGCONT, SIGTERM, then SIGKILL after 10 s) and unmounts the disks.
    pub fn stop(&mut self) {
        for i in 0..self.n() {
            let _ = self.signal(i, "CONT");
            let _ = self.signal(i, "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for r in &mut self.replicas {
            if let Some(child) = &mut r.child {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            r.child = None;
        }
        for r in &self.replicas {
            let _ = Command::new("umount").arg(&r.data).output();
        }
    }
}

impl Drop for Subnet {
    fn drop(&mut self) {
        self.stop();
    }
}
