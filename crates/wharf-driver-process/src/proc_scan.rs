//! Finding tagged processes through /proc.

use std::fs;

use wharf_driver::Found;

/// Whether `pid` runs and is not a zombie waiting to be reaped.
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|s| s != 'Z' && s != 'X'),
        Err(_) => false,
    }
}

/// Process-group leaders whose environment has `variable` starting with `prefix`.
pub fn tagged_processes(variable: &str, prefix: &str) -> Vec<Found> {
    let needle = format!("{variable}={prefix}");
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else { continue };
        let Some(tag) = environ
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find(|kv| kv.starts_with(&needle))
            .and_then(|kv| kv.split_once('=').map(|(_, v)| v.to_owned()))
        else {
            continue;
        };
        // Children of an instance inherit its tag; only the group leader is the instance.
        if is_group_leader(pid) && is_alive(pid) {
            found.push(Found { tag, handle_id: pid });
        }
    }
    found
}

fn is_group_leader(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // Fields after the command: state, ppid, pgrp.
    let Some((_, rest)) = stat.rsplit_once(')') else { return false };
    rest.split_whitespace().nth(2).and_then(|g| g.parse::<u32>().ok()) == Some(pid)
}

/// When `pid` started, in Unix milliseconds: its start time in clock ticks after boot
/// (/proc/PID/stat field 22) plus the boot time (/proc/stat `btime`).
pub fn start_time_millis(pid: u32) -> Option<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state), so field 22 is its 20th item.
    let ticks: i64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot: i64 = fs::read_to_string("/proc/stat").ok()?.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    Some(boot * 1000 + ticks * 1000 / per_second)
}
