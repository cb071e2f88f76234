//! Turning errors into the one line a user sees.

/// The error chain on one line, with a fix appended for known root causes (EPERM/EACCES
/// on ptrace or /proc → root or CAP_SYS_PTRACE).
pub fn user_message(err: &anyhow::Error) -> String {
    let mut msg = format!("{err:#}");
    let denied = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            || e.downcast_ref::<nix::Error>().is_some_and(|n| matches!(n, nix::Error::EPERM | nix::Error::EACCES))
    });
    if denied && !msg.contains("CAP_SYS_PTRACE") {
        msg.push_str(": run as root or grant CAP_SYS_PTRACE (and check /proc/sys/kernel/yama/ptrace_scope)");
    }
    msg
}
