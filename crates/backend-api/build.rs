//! `sqlx::migrate!` embeds `migrations/` at compile time and notices edits to
//! the files it saw, but not a new file: without this, a build could miss a
//! migration added since the last one.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    imageflow_build::pack_relocations();
}
