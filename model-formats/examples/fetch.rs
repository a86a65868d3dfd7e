//! Fetch a known model into the cache and print its path:
//! `cargo run -p recode-model-formats --example fetch -- qwen2.5-coder-0.5b-instruct`
//! (no argument lists the known ids; `--info` also prints the GGUF's config and tensor types).

use recode_model_formats::{fetch, GgufFile};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(id) = args.iter().find(|a| !a.starts_with("--")) else {
        for m in fetch::known_models() {
            println!("{}\t{} bytes\t{}", m.id, m.size, m.description);
        }
        return Ok(());
    };
    let t = std::time::Instant::now();
    let path = fetch::resolve_model(id, true)?;
    eprintln!("resolved in {:.1?}", t.elapsed());
    println!("{}", path.display());
    if args.iter().any(|a| a == "--info") {
        let t = std::time::Instant::now();
        let g = GgufFile::open(&path)?;
        eprintln!("opened in {:.1?}", t.elapsed());
        println!("{:#?}", g.model_config()?);
        let mut counts = std::collections::BTreeMap::new();
        for t in g.tensors() {
            *counts.entry(t.ggml_type.to_string()).or_insert(0) += 1;
        }
        println!("tensor types: {counts:?}");
    }
    Ok(())
}
