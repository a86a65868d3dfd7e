use recode_core::config::{load, parse_set, LoadOptions};
use std::fs;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn extends_merge_env_and_set_in_order() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "configs/base.toml",
        "[training]\nlr = 1e-4\nsteps = 7\n[run]\nname = \"base\"\n",
    );
    write(dir.path(), "configs/more.toml", "[training]\nsteps = 9\n");
    let spec = write(
        dir.path(),
        "exp/a.toml",
        "extends = [\"../configs/base.toml\", \"../configs/more.toml\"]\n[run]\nname = \"a\"\n",
    );
    let loaded = load(&spec, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.spec.training.lr, 1e-4);
    assert_eq!(loaded.spec.training.steps, 9, "later fragment wins");
    assert_eq!(loaded.spec.run.name, "a", "the file wins over its fragments");
    assert_eq!(
        loaded.spec.generation.num_generations, 8,
        "untouched keys keep defaults"
    );
    assert!(
        loaded.origin("training.steps").ends_with("more.toml"),
        "{}",
        loaded.origin("training.steps")
    );
    assert_eq!(loaded.origin("generation.top_p"), "built-in default");

    let opts = LoadOptions {
        sets: vec!["training.lr=2e-5".into(), "run.name=cli".into()],
        env: false,
    };
    let loaded = load(&spec, &opts).unwrap();
    assert_eq!(loaded.spec.training.lr, 2e-5);
    assert_eq!(loaded.spec.run.name, "cli");
    let annotated = loaded.annotated_toml().unwrap();
    assert!(annotated.contains("lr = 0.00002  # --set"), "{annotated}");
    // The resolved spec stands alone: loading it again gives the same spec.
    let again = dir.path().join("resolved.toml");
    std::fs::write(&again, &annotated).unwrap();
    let reloaded = load(&again, &LoadOptions::default()).unwrap();
    assert_eq!(reloaded.spec.training, loaded.spec.training);
    assert_eq!(reloaded.spec.run, loaded.spec.run);
}

#[test]
fn env_override_applies_only_with_double_underscore() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "a.toml", "[training]\nlr = 1e-4\n");
    // Single process-wide env: use a key no other test reads.
    std::env::set_var("RECODE_TRAINING__WARMUP_STEPS", "17");
    std::env::set_var("RECODE_CACHE", "/somewhere"); // not a spec key: must be ignored
    let loaded = load(
        &spec,
        &LoadOptions {
            sets: vec![],
            env: true,
        },
    )
    .unwrap();
    assert_eq!(loaded.spec.training.warmup_steps, 17);
    assert_eq!(loaded.origin("training.warmup_steps"), "environment");
    std::env::remove_var("RECODE_TRAINING__WARMUP_STEPS");
}

#[test]
fn misspelled_key_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "bad.toml", "[training]\nlearning_rate = 1e-4\n");
    let err = format!("{:#}", load(&spec, &LoadOptions::default()).err().unwrap());
    assert!(err.contains("bad.toml"), "{err}");
    assert!(
        err.contains("training.learning_rate") || err.contains("learning_rate"),
        "{err}"
    );
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn wrong_type_is_reported_with_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "bad.toml", "[generation]\nnum_generations = \"eight\"\n");
    let err = format!("{:#}", load(&spec, &LoadOptions::default()).err().unwrap());
    assert!(err.contains("generation.num_generations"), "{err}");
}

#[test]
fn extends_cycle_and_missing_fragment_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", "extends = \"b.toml\"\n");
    let b = write(dir.path(), "b.toml", "extends = \"a.toml\"\n");
    assert!(format!("{:#}", load(&b, &LoadOptions::default()).err().unwrap()).contains("cycle"));
    let c = write(dir.path(), "c.toml", "extends = \"nope.toml\"\n");
    let err = format!("{:#}", load(&c, &LoadOptions::default()).err().unwrap());
    assert!(err.contains("nope.toml") && err.contains("c.toml"), "{err}");
}

#[test]
fn set_values_parse_as_toml_or_string() {
    assert_eq!(parse_set("a.b=3").unwrap().1, toml::Value::Integer(3));
    assert_eq!(parse_set("a.b=[1, 2]").unwrap().1.as_array().unwrap().len(), 2);
    assert_eq!(parse_set("a.b=hello").unwrap().1, toml::Value::String("hello".into()));
    assert!(parse_set("novalue").is_err());
    assert!(parse_set("a..b=1").is_err());
}
