//! The package format: a zip archive holding `manifest.toml` and `plugin.wasm` (a WebAssembly
//! component built for `wasm32-wasip2`). Its SHA-256 is recorded; a detached Ed25519 signature
//! over the package bytes (base64 text, or the 64 raw bytes) is checked against
//! `plugins.trusted_keys` (base64 public keys).

use std::io::{Read, Write};

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::manifest::PackageManifest;

/// The largest package, and the largest entry once inflated.
pub const MAX_PACKAGE_BYTES: usize = 32 * 1024 * 1024;

pub const MANIFEST_ENTRY: &str = "manifest.toml";
pub const COMPONENT_ENTRY: &str = "plugin.wasm";
/// The file extension of packages in the registry and plugin directories.
pub const EXTENSION: &str = "nxp";

/// A package read and checked: its manifest and component, and its digest.
#[derive(Debug, Clone)]
pub struct Package {
    pub manifest: PackageManifest,
    pub wasm: Vec<u8>,
    /// The package file as given.
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Package {
    /// Reads a package file; one message naming what is wrong otherwise.
    pub fn read(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() > MAX_PACKAGE_BYTES {
            return Err(format!("the package is larger than {MAX_PACKAGE_BYTES} bytes"));
        }
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes))
            .map_err(|e| format!("the package is not a zip archive: {e}"))?;
        let manifest_text = read_entry(&mut archive, MANIFEST_ENTRY)?;
        let manifest_text = String::from_utf8(manifest_text).map_err(|_| String::from("manifest.toml is not UTF-8"))?;
        let manifest = PackageManifest::parse(&manifest_text)?;
        let wasm = read_entry(&mut archive, COMPONENT_ENTRY)?;
        if !wasm.starts_with(b"\0asm") {
            return Err(String::from("plugin.wasm is not a WebAssembly binary"));
        }
        let sha256 = sha256_hex(&bytes);
        Ok(Self { manifest, wasm, bytes, sha256 })
    }
}

fn read_entry(archive: &mut zip::ZipArchive<std::io::Cursor<&Vec<u8>>>, name: &str) -> Result<Vec<u8>, String> {
    let entry = archive.by_name(name).map_err(|_| format!("the package has no `{name}`"))?;
    let mut out = Vec::new();
    // Read one byte past the limit, to tell a bomb from an entry of exactly the limit.
    let limit = u64::try_from(MAX_PACKAGE_BYTES).unwrap_or(u64::MAX) + 1;
    entry.take(limit).read_to_end(&mut out).map_err(|e| format!("`{name}` cannot be read: {e}"))?;
    if out.len() > MAX_PACKAGE_BYTES {
        return Err(format!("`{name}` inflates to more than {MAX_PACKAGE_BYTES} bytes"));
    }
    Ok(out)
}

/// Writes a package from a manifest's text and a component, once the manifest is valid.
pub fn build(manifest_text: &str, wasm: &[u8]) -> Result<Vec<u8>, String> {
    PackageManifest::parse(manifest_text)?;
    write(manifest_text, wasm)
}

/// Writes a package without checking the manifest (the server checks it at install).
pub fn write(manifest_text: &str, wasm: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(MANIFEST_ENTRY, options).map_err(|e| e.to_string())?;
        zip.write_all(manifest_text.as_bytes()).map_err(|e| e.to_string())?;
        zip.start_file(COMPONENT_ENTRY, options).map_err(|e| e.to_string())?;
        zip.write_all(wasm).map_err(|e| e.to_string())?;
        zip.finish().map_err(|e| e.to_string())?;
    }
    Ok(out.into_inner())
}

/// A new signing key, as base64 of its 32-byte seed, and its public key, as base64.
pub fn keygen() -> (String, String) {
    let key = SigningKey::from_bytes(&nexus_kernel::id::random_bytes::<32>());
    let b64 = base64::engine::general_purpose::STANDARD;
    (b64.encode(key.to_bytes()), b64.encode(key.verifying_key().to_bytes()))
}

/// The detached signature of `package` with `secret` (base64 seed), as base64 text.
pub fn sign(package: &[u8], secret: &str) -> Result<String, String> {
    let seed = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|_| String::from("the key is not base64"))?;
    let seed: [u8; 32] = seed.try_into().map_err(|_| String::from("the key is not 32 bytes"))?;
    let key = SigningKey::from_bytes(&seed);
    Ok(base64::engine::general_purpose::STANDARD.encode(key.sign(package).to_bytes()))
}

/// Which of `trusted` (base64 public keys) signed `package`, if one did; an error for a
/// signature that is malformed or matches none of them.
pub fn verify(package: &[u8], signature: &[u8], trusted: &[String]) -> Result<usize, String> {
    let text = String::from_utf8_lossy(signature);
    let raw = match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        Ok(raw) => raw,
        Err(_) if signature.len() == 64 => signature.to_vec(),
        Err(_) => return Err(String::from("the signature is neither base64 nor 64 raw bytes")),
    };
    let raw: [u8; 64] = raw.try_into().map_err(|_| String::from("the signature is not 64 bytes"))?;
    let signature = Signature::from_bytes(&raw);
    if trusted.is_empty() {
        return Err(String::from("the package is signed but plugins.trusted_keys is empty"));
    }
    for (n, key) in trusted.iter().enumerate() {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(key.trim()) else { continue };
        let Ok(bytes) = <[u8; 32]>::try_from(bytes) else { continue };
        let Ok(key) = VerifyingKey::from_bytes(&bytes) else { continue };
        if key.verify(package, &signature).is_ok() {
            return Ok(n);
        }
    }
    Err(String::from("the signature does not match the package under any trusted key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_package_does_not() {
        let (secret, public) = keygen();
        let sig = sign(b"package", &secret).unwrap_or_default();
        assert_eq!(verify(b"package", sig.as_bytes(), std::slice::from_ref(&public)), Ok(0));
        assert!(verify(b"packagf", sig.as_bytes(), &[public]).is_err());
    }
}
