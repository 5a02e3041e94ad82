fn main() {
    imageflow_build::pack_relocations();
}
