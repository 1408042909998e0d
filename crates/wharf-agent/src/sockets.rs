//! Who holds a listening port, from `/proc`: a health check that reaches a port proves
//! nothing if another program (a local user squatting the port while an instance is
//! replaced) answers there. Linux only, like the process driver.

use std::fs;

/// Inodes and owners (uid) of the listening TCP sockets (IPv4 and IPv6, any address)
/// on `port`.
fn listeners(port: u16) -> Vec<(u64, u32)> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local_address, rem_address, st, queues, timer, retransmits, uid,
            // timeout, inode.
            let (Some(local), Some(state), Some(uid), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(7), fields.get(9))
            else {
                continue;
            };
            let bound = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if bound == Some(port)
                && *state == "0A"
                && let (Ok(inode), Ok(uid)) = (inode.parse(), uid.parse())
            {
                inodes.push((inode, uid));
            }
        }
    }
    inodes
}

/// The process group of `pid`.
fn group_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `pid` has one of `inodes` open.
fn holds(pid: u32, inodes: &[u64]) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .ok()
            .and_then(|target| {
                let target = target.to_string_lossy().into_owned();
                target
                    .strip_prefix("socket:[")
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|i| i.parse::<u64>().ok())
            })
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

fn pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
}

/// Checks that the listener on `port` belongs to the process group `group` (an
/// instance of the process driver); the error names the process that holds it
/// instead. Nothing listening, or nothing readable, passes: it cannot be told.
pub fn check_listener(port: u16, group: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let found = listeners(port);
    if found.is_empty() {
        return Ok(());
    }
    // Another user's socket is refused even where its process cannot be looked into
    // (an agent that is not root cannot read other users' open files). Root reads
    // them all, and runs instances as other users (`user:`): its check is the group's.
    let me = fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if me != Some(0)
        && let Some((_, uid)) = found.iter().find(|(_, uid)| Some(*uid) != me)
    {
        return Err(format!(
            "port {port} is held by another user (uid {uid}), not by this instance"
        ));
    }
    let inodes: Vec<u64> = found.iter().map(|(inode, _)| *inode).collect();
    let mut holders = Vec::new();
    for pid in pids() {
        if holds(pid, &inodes) {
            if group_of(pid) == Some(group) {
                return Ok(());
            }
            holders.push(pid);
        }
    }
    match holders.first() {
        None => Ok(()),
        Some(pid) => Err(format!(
            "port {port} is held by another process (pid {pid}), not by this instance"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_belongs_to_its_group_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        let group = group_of(me).unwrap();
        assert_eq!(check_listener(port, group), Ok(()));
        let err = check_listener(port, group + 100_000).unwrap_err();
        assert!(err.contains(&format!("pid {me}")), "{err}");
        drop(listener);
        assert_eq!(
            check_listener(port, group + 100_000),
            Ok(()),
            "nothing listens"
        );
    }
}
