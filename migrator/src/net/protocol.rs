//! The handover messages (JSON message frames) and data streams.
//! States and failure handling: docs/network.md, "Protocol".

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// Data streams (first payload byte of a data frame).
pub const STREAM_MODULE: u8 = 1;
pub const STREAM_CODE: u8 = 2;
pub const STREAM_PAGES: u8 = 3;
pub const STREAM_IMAGE: u8 = 4;

/// What the destination says about itself after authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub arch: String,
    /// Engine tasks received here run under.
    pub engine: crate::EngineKind,
    /// wasmtime's precompile compatibility hash per engine (hex): a
    /// precompiled module is only loadable when it matches.
    pub compat: std::collections::BTreeMap<String, String>,
    pub image_version: u32,
    /// `tracer host --json` of this host, when tracer is available.
    pub features: Option<serde_json::Value>,
    pub features_error: Option<String>,
}

/// How the task's code travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeMode {
    /// wasmtime `.cwasm` compiled on the source: no compile on the destination.
    Precompiled,
    /// The WebAssembly module: the destination compiles (or finds it in its cache).
    Portable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    Hello { version: u32, nonce: String },
    Challenge { nonce: String, proof: String },
    Auth { proof: String },
    Welcome { host: HostInfo },
    /// Source → destination: "I want to move this task to you".
    Offer {
        id: String,
        name: String,
        priority: i32,
        module_hash: String,
        module_len: u64,
        code: CodeMode,
        code_len: u64,
        live: bool,
        memory_bytes: u64,
        /// The destination hashes the restored state ([`crate::task::Task::state_hash`]).
        #[serde(default)]
        verify: bool,
    },
    Accept,
    /// Destination → source: will not take the task (source keeps it).
    Refuse { reason: String },
    ModuleDone,
    /// Module loaded (compiled or deserialized); the destination is ready for state.
    Ready { load_ms: f64, code: CodeMode },
    /// One pre-copy round follows on the pages stream.
    RoundDone { round: u32, pages: u64 },
    /// All state sent (pages and image): the source has stopped the task.
    StateDone { live: bool, image_bytes: u64 },
    /// The destination rebuilt the task; it is NOT running.
    Restored {
        restore_us: u64,
        /// With `verify`: the restored task's state hash.
        #[serde(default)]
        state_hash: Option<String>,
    },
    /// Source: "I have stopped and will not resume unless you say you did not start it".
    Commit,
    /// Destination: the task runs here now.
    Started { start_us: u64 },
    /// Either side gives up before Commit; nothing is started.
    Abort { reason: String },
    /// After a lost connection: what became of migration `id`?
    Status { id: String },
    /// `started`, or `aborted` (and it never will start).
    StatusReply { id: String, state: String },
    Error { message: String },
}

/// Pages payload: `[u32 n][u32 page index; n]` then zstd of the pages' bytes.
pub fn encode_pages(indices: &[u32], data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4 + indices.len() * 4 + data.len() / 4);
    out.extend_from_slice(&(indices.len() as u32).to_le_bytes());
    for i in indices {
        out.extend_from_slice(&i.to_le_bytes());
    }
    let z = zstd::bulk::compress(data, level)?;
    out.extend_from_slice(&z);
    Ok(out)
}

/// Inverse of [`encode_pages`]: page indices and their bytes.
pub fn decode_pages(buf: &[u8], page: usize, max_pages: usize) -> Result<(Vec<u32>, Vec<u8>), String> {
    if buf.len() < 4 {
        return Err("short pages frame".into());
    }
    let n = u32::from_le_bytes(buf[..4].try_into().unwrap_or_default()) as usize;
    if n > max_pages || buf.len() < 4 + 4 * n {
        return Err("bad page count".into());
    }
    let idx: Vec<u32> = buf[4..4 + 4 * n].chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let data = zstd::bulk::decompress(&buf[4 + 4 * n..], n * page).map_err(|e| format!("pages: {e}"))?;
    if data.len() != n * page {
        return Err("pages: wrong length".into());
    }
    Ok((idx, data))
}
