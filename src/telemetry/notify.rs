//! systemd's readiness protocol (`Type=notify`): one datagram per state change, sent to the
//! Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! Without the variable (not run by systemd) every call is a no-op.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where notifications go, read once from the environment.
#[derive(Debug, Clone)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` inside means not supervised.
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|raw| {
            use std::os::unix::ffi::OsStrExt;
            let bytes = raw.as_bytes();
            match bytes.first() {
                Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
                Some(b'/') => Some(Target::Path(PathBuf::from(raw))),
                // Anything else (vsock addresses, garbage) is not a socket we can reach.
                _ => None,
            }
        });
        Self { target }
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `READY=1` (the daemon accepts requests) with a status line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}\n",
            std::process::id()
        ))
    }

    /// Sends `STOPPING=1` (shutdown began).
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1\nSTATUS=stopping\n")
    }

    /// Sends one datagram of `KEY=VALUE` lines.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let socket = UnixDatagram::unbound()?;
        match target {
            Target::Path(path) => socket.send_to(message.as_bytes(), path)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)?
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_socket_receives_the_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some(Target::Path(path)),
        };
        notifier.ready("serving").unwrap();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.starts_with("READY=1\nSTATUS=serving\nMAINPID="),
            "{text}"
        );
    }

    #[test]
    fn without_a_manager_nothing_is_sent() {
        let notifier = Notifier { target: None };
        assert!(!notifier.is_active());
        notifier.stopping().unwrap();
    }
}
