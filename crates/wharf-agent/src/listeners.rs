//! Listening sockets that outlive the agent: a small process of their own (`wharf
//! listener-holder`) binds each service address and ingress, keeps a copy of the socket
//! and hands it to whichever agent asks (over a Unix socket, the descriptor passed with
//! SCM_RIGHTS). While an agent restarts or is upgraded, the kernel keeps completing
//! connections into the socket's queue, and the next agent accepts them: nothing is
//! refused, as with systemd's socket activation or Envoy's hot restart.
//!
//! The protocol is one line per request, `BIND ADDR` or `RELEASE ADDR`; the answer is a
//! byte (`0` with the socket attached, or `1` followed by the error), then the
//! connection closes.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Where an agent gets its listening sockets.
pub struct Listeners {
    socket: PathBuf,
    /// The program that runs the holder (`wharf`), started when none answers.
    program: PathBuf,
}

impl Listeners {
    pub fn new(socket: PathBuf, program: PathBuf) -> Self {
        Self { socket, program }
    }

    /// A listening socket on `addr`, from the holder (started if it is not running).
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        let mut stream = self.connect()?;
        writeln!(stream, "BIND {addr}")?;
        let (ok, fd, text) = receive(&stream)?;
        match (ok, fd) {
            (true, Some(fd)) => Ok(TcpListener::from(fd)),
            _ => Err(std::io::Error::other(text)),
        }
    }

    /// Lets the holder close its copy of `addr` (the address is no longer used).
    pub fn release(&self, addr: SocketAddr) {
        if let Ok(mut stream) = UnixStream::connect(&self.socket) {
            let _ = writeln!(stream, "RELEASE {addr}");
            let _ = receive(&stream);
        }
    }

    fn connect(&self) -> std::io::Result<UnixStream> {
        let timed = |stream: UnixStream| -> std::io::Result<UnixStream> {
            // A holder that hangs must not hang the agent.
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.set_write_timeout(Some(Duration::from_secs(2)))?;
            Ok(stream)
        };
        match UnixStream::connect(&self.socket) {
            Ok(stream) => return timed(stream),
            // Only a socket nobody serves is replaced.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused) => {
                let _ = std::fs::remove_file(&self.socket);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut command = std::process::Command::new(&self.program);
        command
            .arg("listener-holder")
            .arg(&self.socket)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = command.spawn()?;
        for _ in 0..200 {
            if let Ok(stream) = UnixStream::connect(&self.socket) {
                // Reaped by a thread: the holder outlives this process anyway.
                std::thread::spawn(move || child.wait());
                return timed(stream);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(std::io::Error::other(format!(
            "the listener holder did not start at {}",
            self.socket.display()
        )))
    }
}

fn receive(stream: &UnixStream) -> std::io::Result<(bool, Option<OwnedFd>, String)> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!(RawFd);
    let (read, fd) = {
        let mut iov = [IoSliceMut::new(&mut byte)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            // Never inherited by the instances this agent starts.
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let fd = msg.cmsgs()?.find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        });
        (msg.bytes, fd)
    };
    // SAFETY: the descriptor was just received and is owned by nobody else here.
    let fd = fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    if read == 0 {
        return Err(std::io::Error::other(
            "the listener holder closed the connection",
        ));
    }
    let mut text = String::new();
    let mut rest = stream;
    let _ = rest.read_to_string(&mut text);
    Ok((byte[0] == b'0', fd, text))
}

/// `wharf listener-holder SOCKET`: serves until its socket file is removed or replaced
/// (its agent's state went away). Blocking and single-threaded: every request is a
/// bind or a lookup.
pub fn hold(socket: &Path) -> std::io::Result<()> {
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let mine = std::fs::metadata(socket).map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    listener.set_nonblocking(true)?;
    let mut held: HashMap<SocketAddr, TcpListener> = HashMap::new();
    let mut idle_rounds = 0u32;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                // Only wharf itself (an agent) may ask: not an instance running as the
                // same user.
                if !caller_is_wharf(&stream) {
                    continue;
                }
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = answer(&stream, &mut held);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                // About every second.
                idle_rounds = (idle_rounds + 1) % 200;
                if idle_rounds != 0 {
                    continue;
                }
                let still = std::fs::metadata(socket)
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == mine)
                    .unwrap_or(false);
                if !still {
                    return Ok(());
                }
            }
            // Out of descriptors, say: the sockets held matter more than this caller.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Whether the process at the other end runs the same program as this one.
fn caller_is_wharf(stream: &UnixStream) -> bool {
    let Ok(credentials) =
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
    else {
        return false;
    };
    let exe = |pid: &str| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    match (exe(&credentials.pid().to_string()), exe("self")) {
        (Some(theirs), Some(ours)) => same_program(&theirs, &ours),
        _ => false,
    }
}

/// Whether a caller running `theirs` runs this holder's program `ours`. A binary
/// upgraded in place (`cargo install`, `wharf host upgrade`) leaves the holder running
/// the old file, which the kernel then names `PATH (deleted)`: the new agent at the
/// same path is still this holder's agent, and must get its sockets back, or the
/// addresses the holder keeps would queue connections nobody accepts.
fn same_program(theirs: &Path, ours: &Path) -> bool {
    let path = |p: &Path| {
        let bytes = p.as_os_str().as_encoded_bytes();
        bytes
            .strip_suffix(b" (deleted)".as_slice())
            .unwrap_or(bytes)
            .to_vec()
    };
    path(theirs) == path(ours)
}

/// One request line, read within 2 s all told (a caller that trickles it is cut).
fn request_line(stream: &UnixStream) -> std::io::Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut reader = stream;
    while line.len() < 256 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "too slow",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        if reader.read(&mut byte)? == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn answer(stream: &UnixStream, held: &mut HashMap<SocketAddr, TcpListener>) -> std::io::Result<()> {
    let line = request_line(stream)?;
    let (verb, addr) = line.trim().split_once(' ').unwrap_or(("", ""));
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return refuse(stream, &format!("not an address: `{addr}`"));
    };
    match verb {
        "BIND" => {
            let mut addr = addr;
            if !held.contains_key(&addr) {
                match TcpListener::bind(addr).and_then(|l| Ok((l.local_addr()?, l))) {
                    Ok((bound, l)) => {
                        // Port 0 is kept under the port it got.
                        addr = bound;
                        held.insert(bound, l);
                    }
                    Err(e) => return refuse(stream, &e.to_string()),
                }
            }
            let Some(listener) = held.get(&addr) else {
                return refuse(stream, "lost");
            };
            let fds = [listener.as_raw_fd()];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(b"0")],
                &cmsg,
                MsgFlags::empty(),
                None,
            )?;
            Ok(())
        }
        "RELEASE" => {
            held.remove(&addr);
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(b"0")],
                &[],
                MsgFlags::empty(),
                None,
            )?;
            Ok(())
        }
        _ => refuse(stream, "ask `BIND ADDR` or `RELEASE ADDR`"),
    }
}

fn refuse(mut stream: &UnixStream, why: &str) -> std::io::Result<()> {
    stream.write_all(b"1")?;
    stream.write_all(why.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_upgraded_in_place_is_still_the_holders_own() {
        use std::path::Path;
        let ours = Path::new("/usr/local/bin/wharf");
        assert!(super::same_program(ours, ours));
        assert!(super::same_program(
            ours,
            Path::new("/usr/local/bin/wharf (deleted)")
        ));
        assert!(
            super::same_program(Path::new("/usr/local/bin/wharf (deleted)"), ours),
            "an agent of the old binary, still running, is the holder's own too"
        );
        for other in ["/usr/bin/python3", "/usr/local/bin/wharf2"] {
            assert!(!super::same_program(Path::new(other), ours), "{other}");
        }
    }

    #[test]
    fn a_held_socket_keeps_its_queue_while_nobody_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("listeners.sock");
        let holder = {
            let socket = socket.clone();
            std::thread::spawn(move || hold(&socket))
        };
        while UnixStream::connect(&socket).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let listeners = Listeners::new(socket.clone(), PathBuf::from("/nonexistent"));
        let first = listeners.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        // The agent goes away; a client connects meanwhile and is not refused.
        drop(first);
        let mut client = std::net::TcpStream::connect(addr).expect("queued, not refused");
        client.write_all(b"ping").unwrap();
        // The next agent gets the same socket, and the waiting connection with it.
        let again = listeners.bind(addr).unwrap();
        let (mut accepted, _) = again.accept().unwrap();
        let mut got = [0u8; 4];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        listeners.release(addr);
        drop(again);
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "released: closed"
        );
        std::fs::remove_file(&socket).unwrap();
        holder.join().unwrap().unwrap();
    }
}
