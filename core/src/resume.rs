//! Strict resume: a checkpoint records the resolved spec it was trained under, a resume under a
//! different spec is refused naming the keys that differ, and everything logged after the
//! checkpoint (metrics, eval lines, TensorBoard events) is cut back so the resumed run's logs read
//! as one uninterrupted run.

use crate::rundir::write_atomic;
use crate::spec::Spec;
use anyhow::{bail, Context, Result};
use protobuf::Message;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The resolved spec as `dotted.key -> value (JSON)`, written into every checkpoint.
pub const SPEC_FILE: &str = "spec.json";

/// Keys that only change how a run is shown, never what it computes.
const DISPLAY_ONLY: &[&str] = &["logging.progress"];

/// The resolved spec flattened to dotted keys (`Spec::flatten`), each value as TOML text.
pub fn flatten_spec(spec: &Spec) -> Result<BTreeMap<String, String>> {
    Ok(spec
        .flatten()
        .context("flattening the spec")?
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect())
}

/// sha256 over the flattened spec (keys sorted), lowercase hex.
pub fn spec_hash(flat: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in flat.iter().filter(|(k, _)| !DISPLAY_ONLY.contains(&k.as_str())) {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    format!("{:x}", h.finalize())
}

/// `key: checkpoint value -> current value` for every key that differs. An empty table is a leaf
/// of `Spec::flatten`; one that gains a key counts as absent, so only that key is reported.
pub fn differences(saved: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = saved.keys().chain(now.keys()).collect();
    fn get<'a>(m: &'a BTreeMap<String, String>, k: &str) -> Option<&'a String> {
        m.get(k).filter(|v| v.as_str() != "{}")
    }
    keys.into_iter()
        .filter(|k| !DISPLAY_ONLY.contains(&k.as_str()))
        .filter_map(|k| {
            let (a, b) = (get(saved, k), get(now, k));
            (a != b).then(|| {
                let show = |x: Option<&String>| x.cloned().unwrap_or_else(|| "(absent)".into());
                format!("{k}: {} -> {}", show(a), show(b))
            })
        })
        .collect()
}

/// The saved flattened spec with every key it lacks at this binary's default: the spec read back
/// through `Spec`'s serde defaults and flattened again. A checkpoint written before a key existed
/// then resumes when the key is at its default and names the key when it is not. A saved spec
/// this binary cannot read (a key since removed or renamed) is returned as it is, so the
/// comparison names that key.
pub fn with_new_keys_at_defaults(saved: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    fn read_back(saved: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
        let mut root = toml::Table::new();
        for (key, text) in saved {
            // Each value was written as TOML text (`toml::Value`'s Display).
            let value = toml::from_str::<toml::Table>(&format!("v = {text}"))
                .ok()?
                .remove("v")?;
            let mut parts: Vec<&str> = key.split('.').collect();
            let leaf = parts.pop()?;
            let mut table = &mut root;
            for part in parts {
                table = table
                    .entry(part)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()?;
            }
            table.insert(leaf.to_string(), value);
        }
        let spec: Spec = toml::Value::Table(root).try_into().ok()?;
        flatten_spec(&spec).ok()
    }
    read_back(saved).unwrap_or_else(|| saved.clone())
}

/// Checks the current spec against the one a checkpoint recorded. Returns the differences that
/// were allowed (empty when the specs match); errors when they differ and `allow` is false.
pub fn check_spec(ckpt: &Path, now: &BTreeMap<String, String>, allow: bool) -> Result<Vec<String>> {
    let path = ckpt.join(SPEC_FILE);
    let saved: BTreeMap<String, String> = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}: not a flattened spec", path.display()))?,
        Err(_) if allow => {
            return Ok(vec![format!(
                "{} is missing (checkpoint from an older version)",
                path.display()
            )])
        }
        Err(e) => bail!(
            "{} cannot be read ({e}): this checkpoint does not record its spec, so resuming cannot be checked; \
             pass --allow-spec-change to resume anyway",
            path.display()
        ),
    };
    let diff = differences(&with_new_keys_at_defaults(&saved), now);
    if !diff.is_empty() && !allow {
        bail!(
            "the spec differs from the one checkpoint {} was trained with:\n  {}\nresume with the same spec \
             (and --set overrides), or pass --allow-spec-change to continue under the new one",
            ckpt.display(),
            diff.join("\n  ")
        );
    }
    Ok(diff)
}

/// Drops every JSON line of `path` whose `step` is after `step` (and lines that do not parse:
/// a line cut short by a kill).
pub fn cut_jsonl(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    write_atomic(path, body.as_bytes())
}

/// Rewrites every TensorBoard event file in `dir` without the events after `step`; a record cut
/// short by a kill ends the file. Returns how many events were dropped.
pub fn cut_events(dir: &Path, step: usize) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut dropped = 0;
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().contains("tfevents") {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut kept = Vec::with_capacity(bytes.len());
        let mut pos = 0;
        // A record: u64 length, u32 crc of the length, data, u32 crc of the data.
        while pos + 12 <= bytes.len() {
            let len = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap()) as usize;
            let end = pos + 12 + len + 4;
            if end > bytes.len() {
                break;
            }
            let data = &bytes[pos + 12..pos + 12 + len];
            match tensorboard_proto::event::Event::parse_from_bytes(data) {
                Ok(ev) if ev.get_step() as usize > step => dropped += 1,
                Ok(_) => kept.extend_from_slice(&bytes[pos..end]),
                Err(_) => break,
            }
            pos = end;
        }
        if kept.len() != bytes.len() {
            write_atomic(&path, &kept)?;
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_changed_added_and_removed_keys() {
        let spec = Spec::default();
        let a = flatten_spec(&spec).unwrap();
        let mut changed = spec.clone();
        changed.training.lr = 1e-3;
        changed.logging.progress = !spec.logging.progress;
        let b = flatten_spec(&changed).unwrap();
        let d = differences(&a, &b);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("training.lr: "), "{d:?}");
        assert_ne!(spec_hash(&a), spec_hash(&b));
        let mut c = a.clone();
        c.remove("training.lr");
        assert_eq!(
            differences(&a, &c),
            vec![format!("training.lr: {} -> (absent)", a["training.lr"])]
        );
        assert_eq!(spec_hash(&a), spec_hash(&flatten_spec(&spec).unwrap()));
    }

    /// A checkpoint written before a key existed resumes when the key is at its default, and the
    /// refusal names the key when it is not (also inside an array of tables such as `reward`).
    #[test]
    fn a_key_absent_from_the_saved_spec_is_accepted_at_its_default_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::default();
        spec.reward = vec![crate::spec::RewardSpec {
            name: "format".into(),
            ..Default::default()
        }];
        let now = flatten_spec(&spec).unwrap();
        // An older binary knew neither `data.split_by` nor a reward's `label`.
        let mut saved = now.clone();
        assert!(saved.remove("data.split_by").is_some());
        let reward = saved.get_mut("reward").unwrap();
        assert!(reward.contains("label"), "{reward}");
        *reward = reward.replace("label = \"\", ", "").replace(", label = \"\"", "");
        assert!(!reward.contains("label"), "{reward}");
        std::fs::write(dir.path().join(SPEC_FILE), serde_json::to_string(&saved).unwrap()).unwrap();

        assert_eq!(check_spec(dir.path(), &now, false).unwrap(), Vec::<String>::new());

        let mut other = spec.clone();
        other.data.split_by = "row".into();
        let err = check_spec(dir.path(), &flatten_spec(&other).unwrap(), false).unwrap_err();
        assert!(
            err.to_string().contains("data.split_by: \"update\" -> \"row\""),
            "{err}"
        );
        let mut other = spec.clone();
        other.reward[0].label = "fmt".into();
        let err = check_spec(dir.path(), &flatten_spec(&other).unwrap(), false).unwrap_err();
        assert!(err.to_string().contains("reward: "), "{err}");
        // A key this binary does not know is still named, not dropped.
        let mut unknown = saved.clone();
        unknown.insert("training.removed_knob".into(), "1".into());
        std::fs::write(dir.path().join(SPEC_FILE), serde_json::to_string(&unknown).unwrap()).unwrap();
        let err = check_spec(dir.path(), &now, false).unwrap_err();
        assert!(
            err.to_string().contains("training.removed_knob: 1 -> (absent)"),
            "{err}"
        );
    }
}
