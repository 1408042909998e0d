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
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
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
        if let Ok(stream) = UnixStream::connect(&self.socket) {
            return Ok(stream);
        }
        let _ = std::fs::remove_file(&self.socket);
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
                return Ok(stream);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
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
            MsgFlags::empty(),
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
    let mine = std::fs::metadata(socket).map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    listener.set_nonblocking(true)?;
    let mut held: HashMap<SocketAddr, TcpListener> = HashMap::new();
    let mut idle_rounds = 0u32;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
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
            Err(e) => return Err(e),
        }
    }
}

fn answer(stream: &UnixStream, held: &mut HashMap<SocketAddr, TcpListener>) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(stream).take(256).read_line(&mut line)?;
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
