//! Moving tasks between hosts over TCP: framing ([`frame`]), peer
//! authentication ([`auth`]) and the handover messages ([`protocol`]).
//! The handover itself (both sides) is in [`crate::migrate`]; the protocol's
//! states are written down in docs/network.md.

pub mod auth;
pub mod frame;
pub mod protocol;
pub mod sys;

pub use frame::{FrameError, Framed};

/// Test hook: `MIGRATOR_FAULT=<step>` kills this process at that step of
/// the handover (as `kill -9` would), or makes the source misbehave.
pub fn fault(step: &str) -> bool {
    std::env::var("MIGRATOR_FAULT").is_ok_and(|v| v == step)
}

/// Dies at `step` when `MIGRATOR_FAULT` names it.
pub fn crash_point(step: &str) {
    if fault(step) {
        eprintln!("[Migration] fault injection: killing this process at {step}");
        sys::die_now();
    }
}

/// Test hook: `MIGRATOR_FAULT=<step>` cuts this connection at that step
/// (what was sent before still arrives; every later read or write fails),
/// as a network failure would.
pub fn cut_point(c: &mut Framed, step: &str) -> bool {
    if !fault(step) {
        return false;
    }
    eprintln!("[Migration] fault injection: cutting the connection at {step}");
    let _ = c.flush();
    let _ = c.stream().shutdown(std::net::Shutdown::Both);
    true
}

/// Default TCP port (`MIGRATION_PORT`).
pub const DEFAULT_PORT: u16 = 9876;

/// `MIGRATION_PORT`, else 9876.
pub fn port() -> u16 {
    std::env::var("MIGRATION_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(DEFAULT_PORT)
}

/// `HOST[:PORT]` (IPv6 in brackets) with the default port; HOST defaults to
/// `ARM_MIGRATION_HOST` when empty.
pub fn resolve_dest(s: &str) -> Result<String, String> {
    let s = s.trim();
    let s = if s.is_empty() {
        std::env::var("ARM_MIGRATION_HOST").map_err(|_| "no destination: give --to HOST[:PORT] or set ARM_MIGRATION_HOST".to_string())?
    } else {
        s.to_string()
    };
    if s.starts_with('[') {
        return Ok(if s.contains("]:") { s } else { format!("{s}:{}", port()) });
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => Ok(s),
        Some(_) if s.matches(':').count() > 1 => Ok(format!("[{s}]:{}", port())),
        Some((_, p)) => Err(format!("bad port {p:?} in {s:?}")),
        None => Ok(format!("{s}:{}", port())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dest_defaults_port() {
        assert_eq!(super::resolve_dest("10.0.0.2").unwrap(), format!("10.0.0.2:{}", super::port()));
        assert_eq!(super::resolve_dest("h:1234").unwrap(), "h:1234");
        assert!(super::resolve_dest("h:x").is_err());
    }
}
