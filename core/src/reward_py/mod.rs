//! Rewards written in Python, the way TRL and verl users write them: a plugin kind beside the
//! built-ins and the C-ABI libraries, behind the same `Reward` trait. One worker process per
//! reward (`worker.py`), started when the reward is built (once per run, and once per `recode
//! validate`, which so imports the file and checks the function), fed a whole batch per call over
//! pipes as JSON lines. Styles:
//! - `trl`: `f(prompts=..., completions=..., completion_ids=..., <every data column>=[...],
//!   **options) -> list[float | None]`, one call per batch (TRL's reward-function signature);
//! - `verl`: `compute_score(data_source, solution_str, ground_truth, extra_info, **options) ->
//!   float | dict` per item; a dict's `score` is the score and its other numeric keys are logged.
//!
//! A missing file or function, a signature that does not fit the style, an exception (with its
//! traceback), a wrong length or type, a non-finite score, a worker that dies or does not answer
//! within `timeout_s`: each is an error naming the reward, its file and function.

use crate::api::{Reward, RewardInput, RewardOutput};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WORKER: &str = include_str!("worker.py");

/// Where the workers' stderr lines also go: the run's `log.txt` once the run directory exists;
/// until then (the workers start when the spec is checked, before the run folder) they are kept.
static LOG: Mutex<(Option<std::path::PathBuf>, Vec<String>)> = Mutex::new((None, Vec::new()));

/// Also append every Python reward worker's stderr line to `path` (the run's log), the lines
/// written before this call first.
pub fn log_to(path: &std::path::Path) {
    let mut log = LOG.lock().unwrap();
    log.0 = Some(path.to_path_buf());
    let pending = std::mem::take(&mut log.1);
    append(path, &pending);
}

fn append(path: &std::path::Path, lines: &[String]) {
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        for l in lines {
            let _ = writeln!(f, "{l}");
        }
    }
}

fn forward_stderr_line(tag: &str, line: &str) {
    eprintln!("[python reward {tag}] {line}");
    let stamped = format!(
        "[{}] [python reward {tag}] {line}",
        chrono::Utc::now().format("%H:%M:%S")
    );
    let mut log = LOG.lock().unwrap();
    match &log.0 {
        Some(path) => append(path, &[stamped]),
        // Kept for the run's log; a few hundred lines at most (a process that never starts a run).
        None if log.1.len() < 500 => log.1.push(stamped),
        None => {}
    }
}

/// How a Python reward is called.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonRewardConfig {
    /// A `.py` file (relative to the working directory), or empty with `module`.
    pub path: String,
    /// An importable module of the interpreter, or empty with `path`.
    pub module: String,
    pub function: String,
    /// "trl" or "verl".
    pub style: String,
    /// TRL style: "text" (default) or "messages" (`[{"role": "assistant", "content": ...}]` per
    /// completion, as TRL passes them for conversational data).
    pub completions_as: String,
    pub python_exe: String,
    pub timeout_s: f64,
    pub options: serde_json::Map<String, Value>,
}

impl PythonRewardConfig {
    /// `file.py:function` or `module:function`, for messages.
    pub fn describe(&self) -> String {
        let src = if self.path.is_empty() { &self.module } else { &self.path };
        format!("{src}:{}", self.function)
    }
}

/// The reward functions a `.py` file defines at top level, for `recode plugins --dir`: a `def`
/// whose parameters name `completions` (TRL style) or `solution_str` (verl style). Read as text,
/// not imported: listing runs no one's code.
pub fn describe_file(path: &std::path::Path) -> Vec<crate::registry::PluginInfo> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    text.split("\ndef ")
        .skip(usize::from(!text.starts_with("def ")))
        .filter_map(|d| {
            let d = d.strip_prefix("def ").unwrap_or(d);
            let (name, rest) = d.split_once('(')?;
            let params = rest.split_once(')')?.0;
            let style = if params.contains("solution_str") {
                "verl"
            } else if params.contains("completions") {
                "trl"
            } else {
                return None;
            };
            Some(crate::registry::PluginInfo {
                kind: crate::registry::PluginKind::Reward,
                name: name.trim().to_string(),
                version: "python".into(),
                source: path.display().to_string(),
                description: format!(
                    "Python reward ({style} style): [[reward]] python = \"{}\", function = \"{}\", style = \"{style}\"",
                    path.display(),
                    name.trim()
                ),
            })
        })
        .collect()
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
    /// The worker's last stderr lines (also forwarded to ours), for the message when it dies.
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

pub struct PythonReward {
    cfg: PythonRewardConfig,
    worker: Mutex<Worker>,
}

impl PythonReward {
    /// Starts the worker, imports the function and checks its signature.
    pub fn start(cfg: PythonRewardConfig) -> Result<Self> {
        if cfg.path.is_empty() == cfg.module.is_empty() {
            bail!("a Python reward needs either `python` (a file) or `module`, not both or neither");
        }
        if !["trl", "verl"].contains(&cfg.style.as_str()) {
            bail!("style: expected \"trl\" or \"verl\", got \"{}\"", cfg.style);
        }
        if !["text", "messages"].contains(&cfg.completions_as.as_str()) {
            bail!(
                "completions_as: expected \"text\" or \"messages\", got \"{}\"",
                cfg.completions_as
            );
        }
        if !cfg.path.is_empty() && !std::path::Path::new(&cfg.path).is_file() {
            bail!(
                "python reward file `{}` does not exist (relative paths are resolved from the working directory)",
                cfg.path
            );
        }
        let mut child = Command::new(&cfg.python_exe)
            .args(["-u", "-c", WORKER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the Python interpreter `{}` (python_exe)", cfg.python_exe))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The worker's stderr (its prints and warnings) goes to ours and to the run's log.txt
        // (`log_to`), each line marked with the reward.
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (tail, tag) = (stderr_tail.clone(), cfg.describe());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                forward_stderr_line(&tag, &line);
                let mut t = tail.lock().unwrap();
                t.push(line);
                if t.len() > 20 {
                    t.remove(0);
                }
            }
        });
        let reward = Self {
            worker: Mutex::new(Worker {
                child,
                stdin,
                replies,
                stderr_tail,
            }),
            cfg,
        };
        let hello = json!({
            "path": reward.cfg.path,
            "module": reward.cfg.module,
            "function": reward.cfg.function,
            "style": reward.cfg.style,
            "completions_as": reward.cfg.completions_as,
            "options": reward.cfg.options,
        });
        let reply = reward.round_trip(&hello, "importing")?;
        if reply.get("ok").is_none() {
            bail!("unexpected first answer from the worker: {reply}");
        }
        Ok(reward)
    }

    /// Sends one line, waits for one answer (up to `timeout_s`), turns a worker error into ours.
    fn round_trip(&self, request: &Value, doing: &str) -> Result<Value> {
        let mut w = self.worker.lock().unwrap();
        let what = self.cfg.describe();
        // A failed write means the worker is gone: the read below reports it with its status.
        let _ = writeln!(w.stdin, "{request}").and_then(|_| w.stdin.flush());
        let timeout = Duration::from_secs_f64(self.cfg.timeout_s.max(0.001));
        let line = match w.replies.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                let _ = w.child.kill();
                let _ = w.child.wait();
                bail!(
                    "python reward {what}: no answer within {} s while {doing} (timeout_s); the worker was stopped",
                    self.cfg.timeout_s
                );
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = w.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                // Let the stderr thread catch up with the last lines.
                std::thread::sleep(Duration::from_millis(100));
                let tail = w.stderr_tail.lock().unwrap().join("\n  ");
                bail!(
                    "python reward {what}: the worker died while {doing} ({status}); its last stderr lines:\n  {tail}"
                );
            }
        };
        let reply: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow!("python reward {what}: unreadable answer while {doing} ({e}): {line:.200}"))?;
        if let Some(err) = reply.get("error").and_then(Value::as_str) {
            let tb = reply.get("traceback").and_then(Value::as_str).unwrap_or("");
            bail!("python reward {what}: {err} (while {doing})\n{tb}");
        }
        Ok(reply)
    }
}

impl Drop for PythonReward {
    fn drop(&mut self) {
        if let Ok(w) = self.worker.get_mut() {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

impl Reward for PythonReward {
    fn name(&self) -> &str {
        &self.cfg.function
    }

    fn score(&self, batch: &[RewardInput<'_>]) -> Result<Vec<f64>> {
        let out = self.score_items(batch)?;
        out.scores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.ok_or_else(|| {
                    anyhow!(
                        "python reward {}: returned None for item {i} where a score is needed",
                        self.cfg.describe()
                    )
                })
            })
            .collect()
    }

    fn score_items(&self, batch: &[RewardInput<'_>]) -> Result<RewardOutput> {
        let empty = serde_json::Map::new();
        let request = json!({
            "prompts": batch.iter().map(|b| b.prompt).collect::<Vec<_>>(),
            "completions": batch.iter().map(|b| b.completion).collect::<Vec<_>>(),
            "completion_ids": batch.iter().map(|b| b.completion_ids).collect::<Vec<_>>(),
            "targets": batch.iter().map(|b| b.target).collect::<Vec<_>>(),
            "columns": batch.iter().map(|b| b.columns.unwrap_or(&empty)).collect::<Vec<_>>(),
        });
        let reply = self.round_trip(&request, &format!("scoring {} completions", batch.len()))?;
        let scores: Vec<Option<f64>> = serde_json::from_value(reply["scores"].clone())
            .map_err(|e| anyhow!("python reward {}: scores: {e}", self.cfg.describe()))?;
        if scores.len() != batch.len() {
            bail!(
                "python reward {}: {} scores for {} completions",
                self.cfg.describe(),
                scores.len(),
                batch.len()
            );
        }
        let metrics = reply["metrics"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(RewardOutput { scores, metrics })
    }
}
