//! The module a Canister names: read from a ConfigMap or downloaded from a URL, gunzipped when
//! gzip-compressed, and checked against its pinned sha256.

use std::io::Read;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use sha2::{Digest, Sha256};
use thicket_operator_api::v1alpha1::WasmSource;

/// Largest module accepted, decompressed: the IC's limit for a Wasm module installed in
/// chunks is 100 MiB.
pub const MAX_MODULE_BYTES: usize = 100 * 1024 * 1024;
/// A download that does not finish in this time fails (and is retried with backoff).
const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The custom section Motoko writes into modules with enhanced orthogonal persistence: an
/// upgrade must keep their Wasm memory.
const EOP_SECTION: &str = "icp:private enhanced-orthogonal-persistence";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("ConfigMap {0} not found")]
    NoConfigMap(String),
    #[error("ConfigMap {name} has no key {key} (in binaryData or data)")]
    NoKey { name: String, key: String },
    #[error("reading ConfigMap {0}: {1}")]
    Kube(String, kube::Error),
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("the module is not gzip or its gzip stream is broken: {0}")]
    Gzip(String),
    #[error("the module is larger than {MAX_MODULE_BYTES} bytes")]
    TooLarge,
    #[error("the module's sha256 is {actual}, not the {expected} the spec pins")]
    Sha256 { expected: String, actual: String },
    #[error("the module is not WebAssembly (no \\0asm header)")]
    NotWasm,
}

impl SourceError {
    /// Whether retrying may help (the ConfigMap may appear, the server may recover).
    pub fn transient(&self) -> bool {
        matches!(
            self,
            SourceError::NoConfigMap(_)
                | SourceError::NoKey { .. }
                | SourceError::Kube(..)
                | SourceError::Download { .. }
        )
    }
}

/// A module ready to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub wasm: Vec<u8>,
    /// sha256 of `wasm`, hex: what the subnet reports as the canister's module hash.
    pub sha256: String,
}

impl Module {
    /// Whether an upgrade must keep the Wasm memory (Motoko's enhanced orthogonal
    /// persistence).
    pub fn keeps_main_memory(&self) -> bool {
        wasmparser::Parser::new(0)
            .parse_all(&self.wasm)
            .filter_map(Result::ok)
            .any(|p| matches!(p, wasmparser::Payload::CustomSection(c) if c.name() == EOP_SECTION))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Gunzips `bytes` if they are gzip, checks size, header and the pinned hash.
pub fn module_of(bytes: Vec<u8>, pinned: Option<&str>) -> Result<Module, SourceError> {
    let wasm = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .take(MAX_MODULE_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| SourceError::Gzip(e.to_string()))?;
        out
    } else {
        bytes
    };
    if wasm.len() > MAX_MODULE_BYTES {
        return Err(SourceError::TooLarge);
    }
    if !wasm.starts_with(b"\0asm") {
        return Err(SourceError::NotWasm);
    }
    let sha256 = sha256_hex(&wasm);
    if let Some(expected) = pinned {
        if expected != sha256 {
            return Err(SourceError::Sha256 {
                expected: expected.into(),
                actual: sha256,
            });
        }
    }
    Ok(Module { wasm, sha256 })
}

/// Fetches the module `source` names (ConfigMaps from `namespace`).
pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    source: &WasmSource,
) -> Result<Module, SourceError> {
    if let Some(cm) = &source.config_map {
        let found = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(&cm.name)
            .await
            .map_err(|e| SourceError::Kube(cm.name.clone(), e))?
            .ok_or_else(|| SourceError::NoConfigMap(cm.name.clone()))?;
        let bytes = found
            .binary_data
            .and_then(|mut d| d.remove(&cm.key))
            .map(|b| b.0)
            .or_else(|| {
                found
                    .data
                    .and_then(|mut d| d.remove(&cm.key))
                    .map(String::into_bytes)
            })
            .ok_or_else(|| SourceError::NoKey {
                name: cm.name.clone(),
                key: cm.key.clone(),
            })?;
        return module_of(bytes, cm.sha256.as_deref());
    }
    let Some(u) = &source.url else {
        return Err(SourceError::NotWasm);
    };
    let fail = |reason: String| SourceError::Download {
        url: u.url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(DOWNLOAD_TIMEOUT)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut resp = client
        .get(&u.url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
        if bytes.len() + chunk.len() > MAX_MODULE_BYTES {
            return Err(SourceError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    module_of(bytes, Some(&u.sha256))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const EMPTY: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn gzip_is_undone_and_the_pinned_hash_checked() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(EMPTY).expect("gzip");
        let packed = gz.finish().expect("gzip");
        let m = module_of(packed, None).expect("a module");
        assert_eq!(m.wasm, EMPTY);
        assert_eq!(m.sha256, sha256_hex(EMPTY));
        assert!(module_of(EMPTY.to_vec(), Some(&m.sha256)).is_ok());
        let wrong = "0".repeat(64);
        assert!(matches!(
            module_of(EMPTY.to_vec(), Some(&wrong)),
            Err(SourceError::Sha256 { .. })
        ));
        assert!(matches!(
            module_of(b"not wasm".to_vec(), None),
            Err(SourceError::NotWasm)
        ));
    }

    #[test]
    fn enhanced_orthogonal_persistence_is_read_from_the_custom_section() {
        assert!(
            !module_of(EMPTY.to_vec(), None)
                .expect("m")
                .keeps_main_memory()
        );
        // A custom section (id 0): name length, name, no payload.
        let mut wasm = EMPTY.to_vec();
        let name = EOP_SECTION.as_bytes();
        wasm.push(0);
        wasm.push((name.len() + 1) as u8);
        wasm.push(name.len() as u8);
        wasm.extend_from_slice(name);
        assert!(module_of(wasm, None).expect("m").keeps_main_memory());
    }
}
