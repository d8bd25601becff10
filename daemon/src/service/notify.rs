//! sd_notify: tells systemd how the daemon is doing, for the unit's `Type=notify`. systemd passes
//! a datagram socket in `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`); each
//! message is one datagram of `KEY=value` lines. Without the variable (not started by systemd)
//! and on other platforms every function here does nothing; a failed send is logged, never fatal.
//! Written by hand (a few lines over `UnixDatagram`) rather than adding a crate.
//!
//! `settle serve` calls `ready()` once it accepts requests, `stopping()` when it begins to shut
//! down, and `status()` to show a line in `systemctl status`.

// Called by `settle serve`; allowed so that the build stays clean however the callers change.
#![allow(dead_code)]

/// The variable systemd sets to the socket it listens on.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// `READY=1`: start-up is complete (systemd then considers the unit started).
pub fn ready() {
    notify("READY=1");
}

/// `STOPPING=1`: the daemon has begun its graceful shutdown.
pub fn stopping() {
    notify("STOPPING=1");
}

/// `STATUS=…`: a one-line state shown by `systemctl status` (newlines become spaces).
pub fn status(text: &str) {
    notify(&status_message(text));
}

fn status_message(text: &str) -> String {
    format!("STATUS={}", text.replace(['\r', '\n'], " "))
}

/// Sends `message` to `$NOTIFY_SOCKET` when it is set.
fn notify(message: &str) {
    #[cfg(target_os = "linux")]
    if let Some(socket) = std::env::var_os(NOTIFY_SOCKET) {
        if let Err(error) = send_to(&socket, message) {
            tracing::warn!(
                socket = %socket.to_string_lossy(),
                %error,
                "cannot notify systemd ({message})"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = message;
}

/// Sends one datagram to the socket named like `$NOTIFY_SOCKET`: a file system path, or `@name`
/// for the abstract name `name`.
#[cfg(target_os = "linux")]
pub(crate) fn send_to(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let name = socket.as_bytes();
    let address = match name.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&name[1..])?,
        Some(b'/') => SocketAddr::from_pathname(socket)?,
        _ => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "only path and abstract (@name) sockets are supported",
            ))
        }
    };
    let sender = UnixDatagram::unbound()?;
    let sent = sender.send_to_addr(message.as_bytes(), &address)?;
    if sent != message.len() {
        return Err(Error::new(
            ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ));
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    use std::time::Duration;

    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 512];
        let length = socket.recv(&mut buffer).expect("a datagram");
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn messages_reach_a_socket_bound_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(receive(&receiver), "READY=1");
        send_to(path.as_os_str(), &status_message("settled\n2026-11-23")).unwrap();
        assert_eq!(receive(&receiver), "STATUS=settled 2026-11-23");
        send_to(path.as_os_str(), "STOPPING=1").unwrap();
        assert_eq!(receive(&receiver), "STOPPING=1");
    }

    #[test]
    fn messages_reach_an_abstract_socket_written_with_an_at_sign() {
        let name = format!("settle-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(receive(&receiver), "READY=1");
    }

    #[test]
    fn a_missing_or_unsupported_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody-listens.sock");
        assert!(send_to(missing.as_os_str(), "READY=1").is_err());
        let error = send_to(std::ffi::OsStr::new("vsock:2:1234"), "READY=1").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
    }

    #[test]
    fn without_the_variable_nothing_is_sent_and_nothing_fails() {
        // The test process is not a systemd service; whatever the environment, these must not
        // panic (a set but dead socket is only logged).
        ready();
        status("idle");
        stopping();
    }
}
