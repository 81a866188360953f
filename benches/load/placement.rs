//! Where the load's processes run: the load generators (wrk, and this program's own client)
//! on one core, each server's serving thread on another, and whatever else a server runs (the
//! reference's grader, its state file's writer) where the kernel puts it.
//!
//! Why pin at all: unpinned, a third busy thread (the reference's grader) at times made the
//! kernel run wrk and the serving thread on one core. Sampling each thread's CPU showed it:
//! passes of the journaled reference in which the two mostly shared a core ran at 60-70k/s,
//! and the same server's passes in which they mostly did not at 81-95k/s. One pass's rate then
//! said where the kernel put the threads more than what the server costs. Every server is
//! placed alike: nginx's one process, hyper's and `serve`'s runtime thread each get the
//! server's core. Pinned, wrk and a serving thread never share a core; the journaled
//! reference's passes still spread as widely (its grader moves), which the paired rounds'
//! medians are for.
//!
//! The threads a server runs besides its serving one are not pinned: the grader takes CPU where
//! there is some, as it would on a machine of its own. What it costs when it has to share the
//! serving thread's core is measured too (the reference "confined"), beside the target.

use std::process::Command;
use std::sync::OnceLock;

#[derive(Clone, Copy)]
pub struct Placement {
    /// The CPUs this program was allowed when it started: every server starts with them.
    everywhere: libc::cpu_set_t,
    server: usize,
    client: usize,
}

static PLACEMENT: OnceLock<Option<Placement>> = OnceLock::new();

fn set_of(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t; CPU_SET ignores a CPU beyond its size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

fn set_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> bool {
    // SAFETY: `set` points to a cpu_set_t of the size given.
    unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

/// Decides the placement once, from the CPUs this program may use, and moves this program (and
/// so wrk and every thread it starts later) to the client's core. None on one CPU: nothing is
/// pinned, and the header says so.
pub fn init() -> Option<Placement> {
    *PLACEMENT.get_or_init(|| {
        // SAFETY: as in `set_of`.
        let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `allowed` is a cpu_set_t of the size given; 0 is this thread.
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) } != 0 {
            return None;
        }
        // SAFETY: reading a valid set.
        let cpus: Vec<usize> =
            (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &allowed) }).collect();
        let [server, client, ..] = cpus[..] else { return None };
        let placement = Placement { everywhere: allowed, server, client };
        set_affinity(0, &set_of(client)).then_some(placement)
    })
}

/// What the header prints.
pub fn describe() -> String {
    match PLACEMENT.get().copied().flatten() {
        Some(p) => format!(
            "placement: wrk and this program's client on CPU {}; each server's serving thread on CPU {} \
             (nginx's process, hyper's and serve's runtime thread); the reference's other threads (its grader) unpinned",
            p.client, p.server
        ),
        None => "placement: nothing pinned (fewer than two CPUs, or affinity not settable)".to_string(),
    }
}

/// A server's command starts on every CPU this program was first allowed, not on the client's
/// core it inherits.
pub fn for_server(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    if let Some(p) = PLACEMENT.get().copied().flatten() {
        let everywhere = p.everywhere;
        // SAFETY: sched_setaffinity is async-signal-safe, and the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                set_affinity(0, &everywhere);
                Ok(())
            });
        }
    }
}

/// Which of a server's threads serve.
pub enum Serving {
    /// Its tokio runtime's worker threads (hyper's yardstick, `serve --threads 1`).
    RuntimeWorkers,
    /// All of it (nginx: one process, one thread; the reference confined to one core).
    Everything,
}

/// Pins the serving threads of process `pid` to the server's core, and gives its other threads
/// every CPU (a thread a worker started, such as the grader, would otherwise have inherited the
/// worker's). Call it once the server has answered a request, when its threads are all there.
/// Panics when a runtime has no worker thread to be found, so that a renamed thread cannot
/// quietly leave a server unpinned.
pub fn serving(pid: u32, which: Serving) {
    let Some(p) = PLACEMENT.get().copied().flatten() else { return };
    let tasks =
        std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    let mut pinned = 0;
    for task in tasks {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<libc::pid_t>() else { continue };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        // tokio names its workers "tokio-runtime-worker" (older) or "tokio-rt-worker"; the
        // kernel keeps 15 bytes of a name.
        let worker = name.starts_with("tokio-rt-worker") || name.starts_with("tokio-runtime-w");
        if matches!(which, Serving::Everything) || worker {
            pinned += usize::from(set_affinity(tid, &set_of(p.server)));
        } else {
            set_affinity(tid, &p.everywhere);
        }
    }
    assert!(pinned > 0, "placement: no serving thread of process {pid} could be pinned");
}
