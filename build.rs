//! Lets `target/<profile>/recode` start outside cargo: it links libstd and the shared burn library
//! dynamically (see .cargo/config.toml), so record where both live as the binary's run path.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Ok(out) = Command::new(rustc).args(["--print", "target-libdir"]).output() {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !dir.is_empty() {
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        }
    }
    // Dependencies' dylibs stay in deps/ beside the binary; a copied binary finds them beside
    // itself, and one installed by `recode install --prefix P` (P/bin) finds them in P/lib/recode.
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN/deps:$ORIGIN:$ORIGIN/../lib/recode");
    println!("cargo:rerun-if-changed=build.rs");
}
