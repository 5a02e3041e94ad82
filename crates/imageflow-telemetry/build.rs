//! The source revision the binaries report as `service.version`
//! (`IMAGEFLOW_GIT_REVISION`): `GIT_REVISION` when set (image builds pass it,
//! their context has no `.git`), else `git rev-parse --short=12 HEAD`, else
//! the crate version. Never fails the build: a revision is a label, not an
//! input.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_REVISION");
    let revision = match std::env::var("GIT_REVISION") {
        Ok(value) if !value.trim().is_empty() => match sanitized(value.trim()) {
            Some(revision) => Some(revision),
            None => {
                println!(
                    "cargo:warning=GIT_REVISION={value:?} is not a revision (letters, digits, '.', '_', '-', up to 64); using git or the crate version"
                );
                from_git()
            }
        },
        _ => from_git(),
    };
    let revision = revision
        .unwrap_or_else(|| std::env::var("CARGO_PKG_VERSION").unwrap_or_else(|_| "unknown".into()));
    println!("cargo:rustc-env=IMAGEFLOW_GIT_REVISION={revision}");
}

/// Only what can go into a resource attribute, a log field and a Prometheus
/// label unquoted.
fn sanitized(value: &str) -> Option<String> {
    let ok = value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then(|| value.to_string())
}

fn git(args: &[&str]) -> Option<String> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(manifest)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn from_git() -> Option<String> {
    let revision = sanitized(&git(&["rev-parse", "--short=12", "HEAD"])?)?;
    watch_head();
    Some(revision)
}

/// Reruns when HEAD moves: a checkout rewrites HEAD, a commit rewrites the
/// branch's ref (or packed-refs after a `git gc`). Only files that exist are
/// named: cargo reruns a script on every build for a path that is missing.
/// Worktrees keep HEAD in their own git dir and refs in the common one.
fn watch_head() {
    let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) else {
        return;
    };
    let common = git(&["rev-parse", "--git-common-dir"])
        .map(|dir| absolute(&git_dir, &dir))
        .and_then(|dir| dir.canonicalize().ok())
        .unwrap_or_else(|| git_dir.clone());
    let mut paths = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(common.join(&reference));
        paths.push(git_dir.join(&reference));
    }
    paths.sort();
    paths.dedup();
    for path in paths.iter().filter(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// `git rev-parse --git-common-dir` answers relative to the working
/// directory (the manifest's) unless it is absolute.
fn absolute(git_dir: &Path, dir: &str) -> PathBuf {
    let path = PathBuf::from(dir);
    if path.is_absolute() {
        return path;
    }
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(manifest) => PathBuf::from(manifest).join(path),
        None => git_dir.to_path_buf(),
    }
}
