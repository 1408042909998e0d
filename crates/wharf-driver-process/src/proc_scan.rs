//! Finding tagged processes through /proc.

use std::fs;

use wharf_driver::Found;

/// Whether `pid` runs and is not a zombie waiting to be reaped.
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|s| s != 'Z' && s != 'X'),
        Err(_) => false,
    }
}

/// Process-group leaders whose environment has `variable` starting with `prefix`.
pub fn tagged_processes(variable: &str, prefix: &str) -> Vec<Found> {
    let needle = format!("{variable}={prefix}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(tag) = environ
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find(|kv| kv.starts_with(&needle))
            .and_then(|kv| kv.split_once('=').map(|(_, v)| v.to_owned()))
        else {
            continue;
        };
        // Children of an instance inherit its tag; only the group leader is the instance.
        // A tag is only a claim: a process of another user that carries one (copied
        // from a leaked agent id) is never adopted, nor stopped as an orphan.
        if !owned_by_this_user(pid) {
            tracing::warn!(pid, %tag, "a process of another user carries an instance tag: ignored");
            continue;
        }
        if is_group_leader(pid) && is_alive(pid) {
            found.push(Found {
                tag,
                handle_id: pid,
            });
        }
    }
    found
}

/// Whether `pid` runs as this process's effective user (real and effective ids).
fn owned_by_this_user(pid: u32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let me = nix::unistd::geteuid().as_raw();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|ids| {
            let ids: Vec<u32> = ids
                .split_whitespace()
                .filter_map(|i| i.parse().ok())
                .collect();
            ids.first() == Some(&me) && ids.get(1) == Some(&me)
        })
        .unwrap_or(false)
}

fn is_group_leader(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command: state, ppid, pgrp.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    rest.split_whitespace()
        .nth(2)
        .and_then(|g| g.parse::<u32>().ok())
        == Some(pid)
}

/// When `pid` started, in Unix milliseconds: now minus its age, where the age is the
/// system uptime (/proc/uptime) minus its start in clock ticks after boot (field 22 of
/// /proc/PID/stat). Both have 10ms resolution, unlike the boot time in whole seconds.
pub fn start_time_millis(pid: u32) -> Option<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state), so field 22 is its 20th item.
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let age_millis = ((uptime - ticks / per_second) * 1000.0).max(0.0) as i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    Some(now - age_millis)
}
