//! Progress of a long job: an indicatif bar on a terminal, and plain lines (done/total, tokens/s,
//! elapsed, estimate of the time left) every few seconds when stderr is a file or a pipe, so a
//! log shows how far a run is.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    /// One line to stderr at most every `interval` (and on `inc_with_line` and `finish`).
    Lines {
        interval: Duration,
    },
    Hidden,
}

impl Mode {
    /// A bar on a terminal, else a line every 5 seconds; `RECODE_PROGRESS_SECS` sets the interval.
    pub fn auto(show: bool) -> Self {
        if !show {
            return Mode::Hidden;
        }
        if std::io::stderr().is_terminal() {
            return Mode::Bar;
        }
        let secs = std::env::var("RECODE_PROGRESS_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(5.0);
        Mode::Lines {
            interval: Duration::from_secs_f64(secs.max(0.0)),
        }
    }
}

struct State {
    done: u64,
    /// Tokens since `start` (for tokens/s); zero means "no rate shown".
    tokens: u64,
    message: String,
    last_line: Option<Instant>,
    finished: bool,
}

/// Shared by threads (`&Progress` is enough to report).
pub struct Progress {
    label: String,
    unit: String,
    total: u64,
    /// Position at start (a resumed run): the rate counts only what this process did.
    first: u64,
    start: Instant,
    mode: Mode,
    bar: Option<ProgressBar>,
    state: Mutex<State>,
}

pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta}) {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    /// `unit` names what is counted ("problems", "steps"); `first` is the starting position.
    pub fn new(label: &str, unit: &str, total: u64, first: u64, mode: Mode) -> Self {
        let bar = (mode == Mode::Bar).then(|| {
            let b =
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_prefix(label.to_string());
            b.set_style(bar_style());
            b.set_position(first);
            b
        });
        Self {
            label: label.into(),
            unit: unit.into(),
            total,
            first,
            start: Instant::now(),
            mode,
            bar,
            state: Mutex::new(State {
                done: first,
                tokens: 0,
                message: String::new(),
                last_line: None,
                finished: false,
            }),
        }
    }

    pub fn inc(&self, n: u64) {
        let mut s = self.state.lock().unwrap();
        s.done += n;
        self.update(&mut s, false);
    }

    pub fn set_position(&self, done: u64) {
        let mut s = self.state.lock().unwrap();
        s.done = done;
        self.update(&mut s, false);
    }

    /// Tokens produced, for the tokens/s figure.
    pub fn add_tokens(&self, n: u64) {
        self.state.lock().unwrap().tokens += n;
    }

    /// Text shown after the counts (replaces the previous message).
    pub fn set_message(&self, m: impl Into<String>) {
        let mut s = self.state.lock().unwrap();
        s.message = m.into();
        if let Some(b) = &self.bar {
            b.set_message(s.message.clone());
        }
    }

    /// `inc`, and a line now whatever the interval (lines mode): e.g. one per run of a sweep.
    pub fn inc_with_line(&self, n: u64) {
        let mut s = self.state.lock().unwrap();
        s.done += n;
        self.update(&mut s, true);
    }

    /// Final line (lines mode) or a finished bar; later calls do nothing.
    pub fn finish(&self) {
        let mut s = self.state.lock().unwrap();
        if s.finished {
            return;
        }
        if let Some(b) = &self.bar {
            b.finish();
        }
        self.update(&mut s, true);
        s.finished = true;
    }

    fn update(&self, s: &mut State, force: bool) {
        if s.finished {
            return;
        }
        if let Some(b) = &self.bar {
            b.set_position(s.done);
            return;
        }
        let Mode::Lines { interval } = self.mode else { return };
        let due = s.last_line.is_none_or(|t| t.elapsed() >= interval);
        if force || due {
            eprintln!("{}", self.line(s));
            s.last_line = Some(Instant::now());
        }
    }

    fn line(&self, s: &State) -> String {
        let elapsed = self.start.elapsed().as_secs_f64();
        let mut out = format!("{}: {}/{} {}", self.label, s.done, self.total, self.unit);
        if s.tokens > 0 && elapsed > 0.0 {
            out.push_str(&format!(", {:.1} tokens/s", s.tokens as f64 / elapsed));
        }
        out.push_str(&format!(", {} elapsed", duration(elapsed)));
        let did = s.done.saturating_sub(self.first);
        if did > 0 && s.done < self.total {
            let left = elapsed / did as f64 * (self.total - s.done) as f64;
            out.push_str(&format!(", about {} left", duration(left)));
        }
        if !s.message.is_empty() {
            out.push_str(&format!("; {}", s.message));
        }
        out
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A bar left unfinished (an error, or a caller that never calls `finish`) is cleared.
        let finished = self.state.lock().map(|s| s.finished).unwrap_or(true);
        if let (Some(b), false) = (&self.bar, finished) {
            b.finish_and_clear();
        }
    }
}

/// 75 -> "1m15s", 3700 -> "1h01m".
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(duration(0.4), "0s");
        assert_eq!(duration(75.0), "1m15s");
        assert_eq!(duration(3700.0), "1h01m");
    }

    #[test]
    fn a_line_has_counts_rate_and_estimate() {
        let p = Progress::new("eval", "problems", 40, 0, Mode::Hidden);
        {
            let mut s = p.state.lock().unwrap();
            s.done = 10;
            s.tokens = 5000;
            s.message = "8 executed".into();
        }
        let line = p.line(&p.state.lock().unwrap());
        assert!(line.starts_with("eval: 10/40 problems, "), "{line}");
        assert!(
            line.contains("tokens/s") && line.contains("left") && line.ends_with("; 8 executed"),
            "{line}"
        );
        // Done: no estimate.
        p.state.lock().unwrap().done = 40;
        let line = p.line(&p.state.lock().unwrap());
        assert!(!line.contains("left"), "{line}");
    }
}
