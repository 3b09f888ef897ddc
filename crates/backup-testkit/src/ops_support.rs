//! Test kit for the operations tests (`tests/ops_*.rs`): the real
//! `sqlite-backup` binary, a tiny webhook receiver on 127.0.0.1, a child
//! process whose stderr can be waited on line by line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::testkit::binary;

/// A `Command` for the binary with a clean environment for tests: no
/// inherited config, no proxy for 127.0.0.1, plain text logs.
pub fn sqlite_backup() -> Command {
    let mut c = Command::new(binary());
    c.env_remove("SQLITE_BACKUP_CONFIG")
        .env_remove("SQLITE_BACKUP_LOG_FILE")
        .env_remove("RUST_LOG")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    c
}

/// One request the webhook received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Body text.
    pub body: String,
}

/// A minimal HTTP server on 127.0.0.1 that answers `200 ok` to every
/// request and records it.
pub struct Webhook {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Webhook {
    /// Start listening on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                handle(stream, &sink);
            }
        });
        Self { port, received }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Read one request and record it, then answer: a sender that has its
/// answer finds the request already in [`Webhook::received`].
fn handle(stream: TcpStream, received: &Mutex<Vec<Received>>) -> Option<()> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    received.lock().unwrap().push(Received {
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut stream = stream;
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    Some(())
}

/// A running child whose stderr lines are collected as they come.
pub struct Running {
    /// The process.
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Spawn `cmd` with stderr piped (stdout discarded).
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr: ChildStderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: rx,
            seen: vec![],
        }
    }

    /// Wait until a stderr line contains `needle`; panics after `timeout`
    /// with everything seen.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        self.wait_for_next(needle, timeout)
    }

    /// [`Running::wait_for`] a line not seen yet.
    pub fn wait_for_next(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no stderr line containing {needle:?} within {timeout:?}; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Send a signal by name (`TERM`, `INT`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Wait for exit (panics after `timeout`); returns the exit code and all
    /// stderr lines.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {timeout:?}; stderr:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The process has exited: its stderr closes once the reader has
        // every line, however loaded the machine.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(60)) {
            self.seen.push(l);
        }
        (status.code(), self.seen.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
