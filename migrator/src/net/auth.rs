//! Peer authentication: a pre-shared key (`MIGRATION_TOKEN_FILE`) proved by
//! an HMAC-SHA256 challenge–response in both directions.
//!
//! Why a PSK rather than mutual TLS: both hosts are run by the same operator,
//! the key is one file to copy (no CA, no certificate expiry, no clock
//! dependence inside network namespaces), and it needs no dependency beyond
//! `sha2`. Both sides contribute a fresh 32-byte nonce, so a recorded
//! exchange cannot be replayed, and each side proves the key under its own
//! role label, so a proof cannot be reflected back. What it does not give:
//! confidentiality, or integrity against an active man in the middle after
//! the handshake (frames carry CRC-32, not a MAC). Use it on a trusted link
//! or inside WireGuard/IPsec; see docs/network.md.
//!
//! ```text
//! source → dest  Hello     {nonce_s}
//! dest → source  Challenge {nonce_d, proof_d = HMAC(k, "migrator/dest"   ‖ nonce_s ‖ nonce_d)}
//! source → dest  Auth      {proof_s = HMAC(k, "migrator/source" ‖ nonce_s ‖ nonce_d)}
//! ```
//! Until `Auth` verifies, the destination accepts frames of at most 4 KiB.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `MIGRATION_TOKEN_FILE`.
pub fn token_file() -> Option<PathBuf> {
    std::env::var_os("MIGRATION_TOKEN_FILE").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Reads a key file: its bytes with surrounding whitespace trimmed; at
/// least 16 bytes.
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read the migration key {}: {e}", path.display()))?;
    let s = String::from_utf8_lossy(&raw);
    let key = s.trim().as_bytes().to_vec();
    if key.len() < 16 {
        return Err(format!("migration key {} is shorter than 16 bytes: generate one with `head -c 32 /dev/urandom | base64 > FILE`", path.display()));
    }
    Ok(key)
}

/// The key from `MIGRATION_TOKEN_FILE`.
pub fn key_from_env() -> Result<Vec<u8>, String> {
    let p = token_file().ok_or_else(|| "MIGRATION_TOKEN_FILE is not set: both hosts need the same pre-shared key file".to_string())?;
    read_key(&p)
}

/// 32 random bytes from the kernel.
pub fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut n)).is_ok();
    assert!(ok, "/dev/urandom is unreadable");
    n
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const B: usize = 64;
    let mut k = [0u8; B];
    if key.len() > B {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let ih = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(ih);
    outer.finalize().into()
}

pub const DEST_LABEL: &[u8] = b"migrator/dest";
pub const SOURCE_LABEL: &[u8] = b"migrator/source";

pub fn proof(key: &[u8], label: &[u8], nonce_s: &[u8], nonce_d: &[u8]) -> [u8; 32] {
    hmac_sha256(key, &[label, nonce_s, nonce_d])
}

/// Constant-time comparison.
pub fn verify(expected: &[u8; 32], got: &[u8]) -> bool {
    got.len() == 32 && expected.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn rfc4231_case_6_long_key() {
        let key = [0xaau8; 131];
        let mac = hmac_sha256(&key, &[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn labels_differ() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(proof(b"k", DEST_LABEL, &a, &b), proof(b"k", SOURCE_LABEL, &a, &b));
        assert!(verify(&proof(b"k", DEST_LABEL, &a, &b), &proof(b"k", DEST_LABEL, &a, &b)));
    }
}
