//! What the test servers (Azurite, moto) share: a free port, waiting until
//! the process accepts connections, and the end of its log for messages.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// A port nobody listens on right now (the OS picks it).
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?;
    Ok(listener.local_addr().expect("bound").port())
}

/// Wait until `child`, called `name`, accepts connections on `port`: an
/// external process gives no other signal, so the port is polled. `Err`
/// carries the reason and the end of `log`; the child is not killed.
pub fn wait_listening(
    name: &str,
    port: u16,
    child: &mut Child,
    timeout: Duration,
    log: &Path,
) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{name} exited ({status}) before accepting connections on {addr}; its log:\n{}",
                log_tail(log)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} did not accept connections on {addr} within {timeout:?}; its log:\n{}",
                log_tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last few KB of a log file.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(3000);
    text[text.floor_char_boundary(start)..].to_string()
}
