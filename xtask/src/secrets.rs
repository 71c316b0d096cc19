//! Secret values: generated in their declared format from the kernel's random source.

use std::fs::File;
use std::io::Read;

use anyhow::{Context, Result};

use crate::model::Generate;

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("read /dev/urandom")?;
    Ok(buf)
}

pub fn generate(kind: Generate) -> Result<String> {
    Ok(match kind {
        Generate::Hex32 => random_bytes(32)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        // A Fernet key is url-safe base64 (with padding) of 32 random bytes.
        Generate::Fernet => base64_url(&random_bytes(32)?),
        Generate::Password => {
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            // Rejection sampling keeps every character equally likely.
            let mut out = String::new();
            while out.len() < 24 {
                for b in random_bytes(32)? {
                    if (b as usize) < 248 && out.len() < 24 {
                        out.push(ALPHABET[b as usize % 62] as char);
                    }
                }
            }
            out
        }
    })
}

pub fn base64_url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let hex = generate(Generate::Hex32).unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        let fernet = generate(Generate::Fernet).unwrap();
        assert_eq!(fernet.len(), 44);
        assert!(fernet.ends_with('='));
        let pw = generate(Generate::Password).unwrap();
        assert_eq!(pw.len(), 24);
        assert!(pw.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(pw, generate(Generate::Password).unwrap());
        assert_eq!(base64_url(b"\xfb\xff"), "-_8=");
        assert_eq!(base64_url(b"abc"), "YWJj");
    }
}
