//! `recode install --prefix DIR`: a copy of this binary that runs anywhere on a node (a compute
//! node of a Slurm cluster, say) without the build tree or the Rust toolchain. The binary links
//! libstd and the shared burn library (`librecode_burn.so`) dynamically, so that out-of-tree model
//! plugins share one burn with the host; `cargo install` would copy the binary alone, whose run
//! path points into the build folder. This copies the binary to DIR/bin and exactly the shared
//! libraries it has loaded (read from /proc/self/maps) to DIR/lib/recode, which the binary's run
//! path names relative to itself (`$ORIGIN/../lib/recode`, see build.rs).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct InstallArgs {
    /// Install to PREFIX/bin/recode and PREFIX/lib/recode/.
    #[arg(long)]
    prefix: PathBuf,
}

/// Rust shared libraries this process has mapped: libstd and the crates built as dylibs.
fn loaded_rust_dylibs() -> Result<Vec<PathBuf>> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    let mut libs: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            let name = Path::new(p).file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".so") && (name.starts_with("libstd-") || name.starts_with("librecode_"))
        })
        .map(PathBuf::from)
        .collect();
    libs.sort();
    libs.dedup();
    if !libs.iter().any(|p| p.to_string_lossy().contains("librecode_burn")) {
        bail!("librecode_burn.so is not among this binary's loaded libraries; was it built by this workspace?");
    }
    Ok(libs)
}

/// Copy to a temporary name beside `dest`, then rename: an installed file is whole or absent.
fn copy_atomic(src: &Path, dest: &Path) -> Result<()> {
    let tmp = dest.with_extension("tmp-install");
    std::fs::copy(src, &tmp).with_context(|| format!("copying {} to {}", src.display(), tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("moving {} into place", dest.display()))?;
    Ok(())
}

pub fn install(a: InstallArgs) -> Result<()> {
    let bin = a.prefix.join("bin");
    let lib = a.prefix.join("lib").join("recode");
    for d in [&bin, &lib] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for l in loaded_rust_dylibs()? {
        let dest = lib.join(l.file_name().unwrap());
        copy_atomic(&l, &dest)?;
        println!("{}", dest.display());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let dest = bin.join("recode");
    copy_atomic(&exe, &dest)?;
    println!("{}", dest.display());
    Ok(())
}
