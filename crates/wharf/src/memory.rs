//! How the long-running processes (controller, agent) use glibc's allocator.

use std::sync::OnceLock;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

/// How often free memory is handed back when nothing asked for it sooner.
const TRIM_EVERY: Duration = Duration::from_secs(30);
/// How long after a deploy ends its buffers are taken to be freed.
const AFTER_DEPLOY: Duration = Duration::from_secs(1);

static NUDGE: OnceLock<SyncSender<()>> = OnceLock::new();

/// glibc gives every thread its own malloc arena, which for a long-running server with
/// many worker threads holds on to memory it no longer uses. Two arenas keep the
/// resident size close to what is live, at no measurable cost here.
///
/// glibc also raises its mmap threshold each time a large block is freed, so a deploy's
/// large buffers (a 10,000-instance plan, its rendering) come from an arena after the
/// first and stay resident once freed. A fixed threshold keeps them mapped apart and
/// returned when freed.
///
/// Freed small blocks stay resident too, until `malloc_trim` hands whole free pages
/// back: a thread does that after every deploy (when its plans, renderings and
/// messages are gone) and every half minute. Without it the controller of the
/// hollow-fleet benchmark entered its second deploy with the first one's 70 MB of
/// freed buffers still resident.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only adjusts allocator tuning; called before other threads
        // allocate much.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
        let (nudge, nudged) = sync_channel::<()>(1);
        let trimmer = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(move || {
                loop {
                    match nudged.recv_timeout(TRIM_EVERY) {
                        Ok(()) => std::thread::sleep(AFTER_DEPLOY),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    // SAFETY: malloc_trim only returns free heap pages to the kernel.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            });
        if trimmer.is_ok() && NUDGE.set(nudge).is_ok() {
            wharf_server::on_deploy_ended(deploy_ended);
        }
    }
}

fn deploy_ended() {
    if let Some(nudge) = NUDGE.get() {
        // A trim already due covers this deploy too.
        let _ = nudge.try_send(());
    }
}
