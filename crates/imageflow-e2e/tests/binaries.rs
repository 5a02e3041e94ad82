//! How the shipped binaries are linked: their relative relocations packed
//! (DT_RELR, `imageflow_build::pack_relocations`), which keeps over 1 MB of
//! relocation entries out of every service's resident memory. A binary crate
//! that loses its `build.rs` would silently go back to the 24-byte entries.

#![cfg(all(target_os = "linux", target_env = "gnu"))]
#![allow(clippy::unwrap_used)]

use std::{fs::File, os::unix::fs::FileExt as _};

use imageflow_testkit::workspace_binary;

const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_RELASZ: u64 = 8;
const DT_RELR: u64 = 36;

/// The dynamic section's `(tag, value)` entries of a 64-bit little-endian ELF file.
fn dynamic_entries(file: &File) -> Vec<(u64, u64)> {
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).unwrap();
    assert_eq!(&header[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(header[4], 2, "not a 64-bit ELF file");
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap());
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        u64::from(u16_at(&header, 0x36)),
        u16_at(&header, 0x38),
    );
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; 56];
        file.read_exact_at(&mut ph, phoff + i * phentsize).unwrap();
        if u32_at(&ph, 0) != PT_DYNAMIC {
            continue;
        }
        let (offset, size) = (u64_at(&ph, 0x08), u64_at(&ph, 0x20));
        let mut dynamic = vec![0u8; usize::try_from(size).unwrap()];
        file.read_exact_at(&mut dynamic, offset).unwrap();
        return dynamic
            .chunks_exact(16)
            .map(|e| (u64_at(e, 0), u64_at(e, 8)))
            .take_while(|&(tag, _)| tag != DT_NULL)
            .collect();
    }
    panic!("no dynamic section: not a dynamically linked executable");
}

#[test]
fn every_binary_packs_its_relative_relocations() {
    for name in [
        "resize-svc",
        "filter-svc",
        "ai-detect-svc",
        "backend-api",
        "imageflowctl",
    ] {
        let path = workspace_binary(name);
        let entries = dynamic_entries(&File::open(&path).unwrap());
        let value = |tag| entries.iter().find(|&&(t, _)| t == tag).map(|&(_, v)| v);
        assert!(
            value(DT_RELR).is_some(),
            "{name} has no packed relocations (DT_RELR): its build.rs must call imageflow_build::pack_relocations()"
        );
        // What is left unpacked are the few non-relative ones (symbol lookups).
        let rela = value(DT_RELASZ).unwrap_or(0);
        assert!(
            rela < 64 * 1024,
            "{name} still has {rela} bytes of RELA relocations"
        );
    }
}
