//! Process hardening for a daemon that holds key material in memory:
//!
//! - `prctl(PR_SET_DUMPABLE, 0)`: no core dumps, and other same-uid processes cannot ptrace
//!   the daemon or read its `/proc/<pid>/mem`;
//! - `RLIMIT_CORE = 0`: belt and braces against core files;
//! - `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: no page (and so no unwrapped root key
//!   or DEK) is ever written to swap. Only attempted when the memlock limit allows it (root,
//!   CAP_IPC_LOCK or an unlimited `ulimit -l`): under a small limit, locking future memory would
//!   make ordinary allocations fail. Otherwise a warning says how to enable it.
//!
//! Secrets are additionally zeroized on drop (`crypto::SecretKey`, the expanded ciphers).
//! `GET /v1/health` reports the outcome (`memory_locked`, `dumpable`), which tests check
//! together with `VmLck` in `/proc/<pid>/status`.
#![allow(unsafe_code)]

/// What [`protect_process`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// All memory is locked against swapping.
    pub memory_locked: bool,
    /// The process can be dumped or ptraced (false when hardened).
    pub dumpable: bool,
}

/// Applies the measures above; never fails, reports what took effect.
pub fn protect_process() -> Protection {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integer arguments and touches no memory
    // of ours.
    let dumpable_set = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0;
    if !dumpable_set {
        tracing::warn!("could not mark the process non-dumpable");
    }
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass by reference, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
        tracing::warn!("could not set RLIMIT_CORE to 0");
    }
    if memlock_allowed() {
        // SAFETY: mlockall takes flags only.
        let rc =
            unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "mlockall failed; memory may be swapped");
        }
    } else {
        tracing::warn!(
            "memory is not locked: the memlock limit is too small; run as root, grant CAP_IPC_LOCK \
             or raise `ulimit -l` to unlimited so key material can never be swapped out"
        );
    }
    status()
}

fn memlock_allowed() -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own for the duration of the call.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root || (ok && limit.rlim_cur == libc::RLIM_INFINITY)
}

/// The process's current protection, read back from the kernel.
pub fn status() -> Protection {
    // SAFETY: PR_GET_DUMPABLE returns the flag and touches no memory.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) } != 0;
    let memory_locked = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmLck:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .is_some_and(|kb| kb > 0);
    Protection {
        memory_locked,
        dumpable,
    }
}

/// Sets the process umask to 077, so that every file and directory the daemon or a library
/// it uses (the store engine) creates is private to its user, whatever mode was asked for.
/// Explicit modes (0700 directories, 0600 files) stay in place; this only catches the rest.
pub fn private_umask() {
    // SAFETY: umask takes a mode and returns the previous one; it touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}
