//! Runs the real `clarion` binary as a child process for integration tests: writes its TOML
//! config into a temp dir, waits for `/healthz`, and stops it with SIGTERM or `kill -9`.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "test-key-0123456789abcdef";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Server {
    /// Writes `config.toml` (listen, data_dir, API key, plus `extra`) into `dir` and starts.
    pub fn start(dir: &Path, shards: usize, extra: &str) -> Server {
        let mut s = Server::configure(dir, shards, extra);
        s.spawn();
        s
    }

    /// Like `start`, without waiting for `/healthz` over plain HTTP (a TLS API).
    pub fn start_unwaited(dir: &Path, shards: usize, extra: &str) -> Server {
        let mut s = Server::configure(dir, shards, extra);
        s.spawn_unwaited();
        s
    }

    /// Writes `config.toml`; lines of an `[api]` section in `extra` join the harness's own.
    fn configure(dir: &Path, shards: usize, extra: &str) -> Server {
        let (api_extra, extra) = match extra.split_once("[api]\n") {
            None => (String::new(), extra.to_string()),
            Some((before, rest)) => {
                let end = rest.find("\n[").map_or(rest.len(), |i| i + 1);
                (rest[..end].to_string(), format!("{before}{}", &rest[end..]))
            }
        };
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = dir.join("config.toml");
        // No drain delay unless a test sets one: every test stops its servers with SIGTERM.
        let server = if extra.contains("[server]") {
            ""
        } else {
            "[server]\ndrain_delay_ms = 0\n\n"
        };
        let text = format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\nshards = {shards}\n\n[api]\nkeys = [\"{API_KEY}\"]\n{api_extra}\n{server}{extra}\n",
            dir.join("data").display()
        );
        std::fs::write(&config, text).unwrap();
        Server {
            child: None,
            addr,
            dir: dir.to_path_buf(),
            config,
        }
    }

    pub fn spawn(&mut self) {
        self.spawn_unwaited();
        self.wait_healthy();
    }

    /// Starts the process without waiting for `/healthz` (to kill it while it recovers).
    pub fn spawn_unwaited(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        raise_memlock();
        let child = Command::new(env!("CARGO_BIN_EXE_clarion"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("CLARION_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start clarion");
        self.child = Some(child);
    }

    /// Whether `/healthz` answers 200 right now (false while the process starts or recovers).
    pub fn healthy_now(&self) -> bool {
        let c = super::http::Client {
            addr: self.addr,
            key: None,
        };
        c.try_raw("GET", "/healthz", None)
            .is_ok_and(|r| r.status == 200)
    }

    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("clarion exited early with {status}: {}", self.log());
            }
            if TcpStream::connect(self.addr).is_ok() {
                let c = super::http::Client {
                    addr: self.addr,
                    key: None,
                };
                // A connection reset while the server is still starting is "not yet".
                if c.try_raw("GET", "/healthz", None)
                    .is_ok_and(|r| r.status == 200)
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("clarion did not become healthy: {}", self.log());
    }

    pub fn client(&self) -> super::http::Client {
        super::http::Client::new(self.addr, API_KEY)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Sends `sig` to the running server without waiting.
    pub fn signal(&self, sig: i32) {
        let c = self.child.as_ref().expect("server running");
        send_signal(c.id() as i32, sig);
    }

    /// Waits (bounded) for the process to exit, after a signal sent with [`Server::signal`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("server running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                c.kill().unwrap();
                panic!("clarion did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// glommio needs locked memory for io_uring. Best effort (works as root); children inherit it. The test script raises it too.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; failure just leaves the limit as it was.
    unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
    }
}

/// Polls `f` until it returns Some or the timeout passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
