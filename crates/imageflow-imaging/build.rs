//! Compiles `csrc/jpeg_stream.c`, the row-band wrapper around libjpeg-turbo's raw
//! decoder and encoder (see `src/stream.rs`), against the headers and static library
//! that turbojpeg-sys built: one libjpeg-turbo in the binary, not two.

fn main() {
    println!("cargo:rerun-if-changed=csrc/jpeg_stream.c");
    // turbojpeg-sys's `links = "turbojpeg"` metadata: its include directories.
    let includes = std::env::var("DEP_TURBOJPEG_INCLUDE")
        .expect("turbojpeg-sys reports where it installed libjpeg-turbo's headers");
    let mut build = cc::Build::new();
    build.file("csrc/jpeg_stream.c").warnings(true).opt_level(2);
    for dir in includes.split(',').filter(|d| !d.is_empty()) {
        build.include(dir);
    }
    build.compile("imageflow_jpeg_stream");
}
