//! The kube-apiserver of the test cluster (`scripts/cluster.sh up`, found through
//! `RUNTIME_API_CLUSTER_DIR`), killed and started again by the tests of an API server outage.
//! Whoever uses it must be alone on the cluster.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The running kube-apiserver of the test cluster: its pid file and command line.
pub struct ApiServer {
    pid_file: PathBuf,
    argv: Vec<String>,
    log: PathBuf,
}

impl ApiServer {
    pub fn find() -> ApiServer {
        let dir = PathBuf::from(
            std::env::var("RUNTIME_API_CLUSTER_DIR")
                .expect("needs the cluster of scripts/cluster.sh up"),
        );
        let pid_file = dir.join("pids/kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        ApiServer { pid_file, argv, log: dir.join("logs/kube-apiserver.log") }
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(&self.pid_file).unwrap().trim().parse().unwrap()
    }

    pub fn kill(&self) {
        let pid = self.pid();
        // SIGKILL: a crash, and no waiting for its graceful shutdown (which drains watches for long).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while super::pid_alive(i64::from(pid)) {
            assert!(Instant::now() < deadline, "kube-apiserver did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again with the same arguments, detached, and records its pid for `cluster.sh down`.
    pub fn start(&self) {
        let log = std::fs::OpenOptions::new().append(true).open(&self.log).unwrap();
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        std::fs::write(&self.pid_file, child.id().to_string()).unwrap();
        std::mem::forget(child);
    }
}
