//! Who listens on a TCP port of this machine, so a deploy that would need it can name
//! the owner instead of letting its instance crash-loop on "address already in use".
//! Linux `/proc` only; elsewhere (or without the permission to look) the owner is unknown.

use std::net::TcpListener;

/// Whether `port` is free of other programs here: only "address in use" counts as
/// taken (a port below 1024 this controller may not bind is no conflict).
pub fn is_free(port: u16) -> bool {
    !matches!(
        TcpListener::bind(("0.0.0.0", port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

/// The process listening on `port`, as `redis-server (pid 412)`, if it can be found.
pub fn owner(port: u16) -> Option<String> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                inodes
                    .iter()
                    .any(|inode| target == format!("socket:[{inode}]"))
            })
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(format!("{} (pid {pid})", name.trim()));
        }
    }
    None
}

/// The inodes of the sockets listening on `port` in one `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse().ok()?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let listening = *state == "0A";
            (listening && u16::from_str_radix(hex_port, 16).ok()? == port).then_some(inode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_the_kernel_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n   1: 0100007F:18EB 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0\n";
        assert_eq!(
            listening_inodes(table, 6379),
            vec![4242],
            "only the listener"
        );
        assert!(listening_inodes(table, 80).is_empty());
    }

    #[test]
    fn the_owner_of_a_port_this_process_listens_on_is_found() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free(port));
        let owner = owner(port).expect("found through /proc");
        assert!(
            owner.contains(&format!("pid {}", std::process::id())),
            "{owner}"
        );
    }
}
