//! What the binaries' build scripts share: how their executables are linked.

/// Asks the linker to pack the executables' relative relocations (DT_RELR).
///
/// A position-independent Rust binary carries about 48,000 of them, one per
/// pointer in its vtables and static tables. As 24-byte RELA entries they are
/// 1.1–1.3 MB that the dynamic loader reads at every start, and those pages
/// stay resident. Packed they are about 16 KB, and resize-svc and filter-svc
/// idle 1.1–1.2 MB smaller (bench/README, issue 18's ninth pass).
///
/// Only for glibc on Linux: the packed form needs glibc 2.36 or later at run
/// time, which every image this project ships has (Debian 12, Ubuntu 24.04).
/// Call from a binary crate's `build.rs`; it applies to that crate's binaries,
/// not its tests.
#[allow(clippy::print_stdout)] // cargo reads a build script's directives from its stdout
pub fn pack_relocations() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
