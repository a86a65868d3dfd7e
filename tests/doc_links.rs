//! Every link between the repository's Markdown files resolves. The README is the front door and
//! the reference lives in pages under docs/, so a moved section, a renamed heading or a deleted
//! file must not leave a dead link behind. For each inline link `[text](dest)` and image
//! `![alt](dest)` in README.md, docs/ and every other Markdown file of the tree (outside fenced
//! code blocks and inline code spans; http(s) and mailto links are not followed): the file that
//! `dest` names, relative to the Markdown file's own folder, exists; and a `#fragment` on a
//! Markdown file (or on the same file, `#...` alone) names one of its headings by GitHub's anchor.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Folders never walked: build output, version control, dependencies, the data shared beside the
/// checkout and run outputs (sweep summaries). Hidden folders (`.git`, tool caches) are skipped too.
const SKIP: &[&str] = &["target", ".git", "node_modules", "shared", "runs"];

/// Every `*.md` file under `dir`, sorted; symbolic links are not followed.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            if !SKIP.contains(&name.as_str()) && !name.starts_with('.') {
                markdown_files(&entry.path(), out);
            }
        } else if kind.is_file() && name.ends_with(".md") {
            out.push(entry.path());
        }
    }
}

/// GitHub's anchor for a heading: lowercase; every character that is not a letter, a digit, a
/// space, a hyphen or an underscore removed (Markdown's `*`, `\` and backticks with them); spaces
/// become hyphens. Emphasis written with underscores would keep them here (no heading uses it).
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The text of an ATX heading (`# ...` to `###### ...`, at most 3 spaces of indent), without an
/// optional closing run of `#`.
fn heading(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let t = &line[indent..];
    let hashes = t.len() - t.trim_start_matches('#').len();
    if hashes == 0 || hashes > 6 {
        return None;
    }
    let rest = &t[hashes..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let text = rest.trim();
    let open = text.trim_end_matches('#');
    if open.is_empty() {
        Some("")
    } else if open.len() < text.len() && open.ends_with([' ', '\t']) {
        Some(open.trim_end())
    } else {
        Some(text)
    }
}

/// The marker of a code fence (three or more backticks or tildes) that starts `line`.
fn fence(line: &str) -> Option<(char, usize)> {
    let t = line.trim_start();
    let c = t.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = t.chars().take_while(|&x| x == c).count();
    (n >= 3).then_some((c, n))
}

/// `line` with every inline code span (a run of backticks up to the next run of the same length)
/// replaced by spaces, so links inside code are not seen and links around it still are.
fn blank_code_spans(line: &str) -> Vec<char> {
    let mut s: Vec<char> = line.chars().collect();
    let run_at = |s: &[char], i: usize| s[i..].iter().take_while(|&&c| c == '`').count();
    let mut i = 0;
    while i < s.len() {
        if s[i] != '`' {
            i += 1;
            continue;
        }
        let run = run_at(&s, i);
        let mut k = i + run;
        let mut close = None;
        while k < s.len() {
            if s[k] == '`' {
                let r = run_at(&s, k);
                if r == run {
                    close = Some(k);
                    break;
                }
                k += r;
            } else {
                k += 1;
            }
        }
        match close {
            Some(k) => {
                for c in &mut s[i..k + run] {
                    *c = ' ';
                }
                i = k + run;
            }
            None => i += run,
        }
    }
    s
}

/// The index of the bracket that closes the one at `at` (backslash escapes skipped).
fn closing(s: &[char], at: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = at;
    while i < s.len() {
        if s[i] == '\\' {
            i += 2;
            continue;
        }
        if s[i] == open {
            depth += 1;
        } else if s[i] == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// The destinations of the inline links and images of one line (code spans already blanked).
fn link_destinations(s: &[char]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..s.len() {
        if s[i] != '[' || (i > 0 && s[i - 1] == '\\') {
            continue;
        }
        let Some(text_end) = closing(s, i, '[', ']') else {
            continue;
        };
        if s.get(text_end + 1) != Some(&'(') {
            continue;
        }
        let Some(dest_end) = closing(s, text_end + 1, '(', ')') else {
            continue;
        };
        let inner: String = s[text_end + 2..dest_end].iter().collect();
        let inner = inner.trim();
        let dest = match inner.strip_prefix('<') {
            Some(rest) => rest.split('>').next().unwrap_or(""),
            None => inner.split_whitespace().next().unwrap_or(""),
        };
        out.push(dest.to_string());
    }
    out
}

/// What the check needs of one Markdown file.
struct Doc {
    /// (line number, destination) of every inline link and image outside code.
    links: Vec<(usize, String)>,
    /// GitHub's anchors of its headings, duplicates numbered `-1`, `-2`, ...
    anchors: HashSet<String>,
}

fn parse(text: &str) -> Doc {
    let mut doc = Doc {
        links: Vec::new(),
        anchors: HashSet::new(),
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut open_fence: Option<(char, usize)> = None;
    for (n, line) in text.lines().enumerate() {
        if let Some((c, len)) = open_fence {
            // A closing fence: the same character, at least as many, nothing else on the line.
            let closes = fence(line).is_some_and(|f| f.0 == c && f.1 >= len) && line.trim().chars().all(|x| x == c);
            if closes {
                open_fence = None;
            }
            continue;
        }
        if let Some(f) = fence(line) {
            open_fence = Some(f);
            continue;
        }
        if let Some(h) = heading(line) {
            let base = slug(h);
            let count = seen.entry(base.clone()).or_insert(0);
            doc.anchors
                .insert(if *count == 0 { base } else { format!("{base}-{count}") });
            *count += 1;
        }
        for dest in link_destinations(&blank_code_spans(line)) {
            doc.links.push((n + 1, dest));
        }
    }
    doc
}

/// `%XX` escapes decoded (a link to a file or heading with spaces or non-ASCII characters).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16);
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn load<'a>(cache: &'a mut HashMap<PathBuf, Doc>, path: &Path) -> &'a Doc {
    cache.entry(path.to_path_buf()).or_insert_with(|| {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        parse(&text)
    })
}

#[test]
fn github_anchor_slugs() {
    assert_eq!(slug("Write a reward in Python"), "write-a-reward-in-python");
    assert_eq!(slug("Evaluation and the sandbox"), "evaluation-and-the-sandbox");
    assert_eq!(slug("ES* and EM*"), "es-and-em");
    // Markup goes with the punctuation; a symbol between two spaces leaves two hyphens.
    assert_eq!(
        slug("format + ES\\*, seed 1: 24 steps (`--only`)"),
        "format--es-seed-1-24-steps---only"
    );
}

#[test]
fn links_in_code_are_ignored_and_duplicate_headings_are_numbered() {
    let doc = parse(
        "# Title ##\n\n[a](x.md) `[b](y.md)` ![c](img/z.png \"title\")\n\n```sh\n[d](w.md)\n# not a heading\n```\n\
         \n## Title\n[[e](v.md)](u.md) \\[f](t.md)\n",
    );
    let dests: Vec<&str> = doc.links.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(dests, ["x.md", "img/z.png", "u.md", "v.md"]);
    assert_eq!(doc.links[0].0, 3);
    let mut anchors: Vec<&str> = doc.anchors.iter().map(String::as_str).collect();
    anchors.sort();
    assert_eq!(anchors, ["title", "title-1"]);
}

#[test]
fn every_link_between_markdown_files_resolves() {
    let root = root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(
        files.iter().any(|f| f == &root.join("README.md")) && files.len() > 5,
        "found only {files:?}"
    );

    let mut cache: HashMap<PathBuf, Doc> = HashMap::new();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let links = load(&mut cache, file).links.clone();
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        for (line, dest) in links {
            if dest.is_empty() || ["http://", "https://", "mailto:"].iter().any(|p| dest.starts_with(p)) {
                continue;
            }
            checked += 1;
            let (path, fragment) = match dest.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (dest.as_str(), None),
            };
            let path = percent_decode(path);
            let target = if path.is_empty() {
                file.clone()
            } else if let Some(from_root) = path.strip_prefix('/') {
                root.join(from_root)
            } else {
                file.parent().unwrap().join(&path)
            };
            if !target.exists() {
                broken.push(format!("{shown}:{line}: {dest} (no such file or folder)"));
                continue;
            }
            let Some(fragment) = fragment.filter(|f| !f.is_empty()) else {
                continue;
            };
            if !(target.is_file() && target.extension().is_some_and(|e| e == "md")) {
                continue;
            }
            let target = target.canonicalize().unwrap_or(target);
            let fragment = percent_decode(fragment);
            if !load(&mut cache, &target).anchors.contains(&fragment) {
                broken.push(format!(
                    "{shown}:{line}: {dest} (no heading whose anchor is #{fragment})"
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken link(s) of {checked} checked in {} Markdown files:\n{}",
        broken.len(),
        files.len(),
        broken.join("\n")
    );
}
