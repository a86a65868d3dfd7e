//! PNG line plots of a metric against the step, one line per run, drawn by hand and encoded with
//! `png` (already built for TensorBoard's image support, so plots add no build time). Text is only
//! the axis ranges, in a 3x5 digit font; the legend (run -> colour) is in summary.md.

use super::record::{Series, SweepRecord};
use crate::rundir::write_atomic;
use anyhow::Result;
use std::path::{Path, PathBuf};

const W: usize = 800;
const H: usize = 480;
const LEFT: usize = 90;
const RIGHT: usize = 20;
const TOP: usize = 20;
const BOTTOM: usize = 40;

/// Tableau 10.
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

pub fn colour_name(i: usize) -> String {
    let [r, g, b] = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// One PNG per chosen metric under `plots/`; returns (metric, file, legend of (run, colour)).
#[allow(clippy::type_complexity)]
pub fn plot_all(
    dir: &Path,
    rec: &SweepRecord,
    series: &[Series],
) -> Result<Vec<(String, PathBuf, Vec<(String, String)>)>> {
    let mut out = Vec::new();
    for metric in &rec.metrics {
        let lines: Vec<(usize, &Vec<(usize, f64)>)> = series
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.get(metric).filter(|v| !v.is_empty()).map(|v| (i, v)))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let file = dir.join("plots").join(format!(
            "{}.png",
            metric.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
        let png = draw(&lines.iter().map(|(i, v)| (*i, v.as_slice())).collect::<Vec<_>>())?;
        write_atomic(&file, &png)?;
        let legend = lines
            .iter()
            .map(|(i, _)| (rec.runs[*i].name.clone(), colour_name(*i)))
            .collect();
        out.push((metric.clone(), file, legend));
    }
    Ok(out)
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Bresenham, `thick` pixels wide.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for ox in 0..thick {
                for oy in 0..thick {
                    self.set(x + ox - thick / 2, y + oy - thick / 2, c);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Digits, '.', '-', 'e' and '+' in a 3x5 font scaled by 2; (x, y) is the top-left corner.
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (n, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(x + n as i64 * 8 + col * 2 + ox, y + r as i64 * 2 + oy, c);
                        }
                    }
                }
            }
        }
    }
}

fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => [0; 5],
    }
}

fn label(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e5) {
        format!("{x:.2e}")
    } else {
        format!("{x:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// The PNG bytes of lines (colour index, (step, value) points).
fn draw(lines: &[(usize, &[(usize, f64)])]) -> Result<Vec<u8>> {
    let pts = || lines.iter().flat_map(|(_, v)| v.iter()).filter(|p| p.1.is_finite());
    let (x0, mut x1) = (
        pts().map(|p| p.0).min().unwrap_or(0) as f64,
        pts().map(|p| p.0).max().unwrap_or(1) as f64,
    );
    let (mut y0, mut y1) = (
        pts().map(|p| p.1).fold(f64::INFINITY, f64::min),
        pts().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
    );
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let to_px = |s: f64, v: f64| -> (i64, i64) {
        (
            LEFT as i64 + ((s - x0) / (x1 - x0) * pw).round() as i64,
            TOP as i64 + ((y1 - v) / (y1 - y0) * ph).round() as i64,
        )
    };
    let mut c = Canvas {
        px: vec![255; W * H * 3],
    };
    let (grid, axis, ink) = ([230, 230, 230], [120, 120, 120], [40, 40, 40]);
    for i in 0..=4 {
        let y = TOP as i64 + (ph * i as f64 / 4.0) as i64;
        c.line((LEFT as i64, y), ((W - RIGHT) as i64, y), grid, 1);
    }
    c.line((LEFT as i64, TOP as i64), (LEFT as i64, (H - BOTTOM) as i64), axis, 1);
    c.line(
        (LEFT as i64, (H - BOTTOM) as i64),
        ((W - RIGHT) as i64, (H - BOTTOM) as i64),
        axis,
        1,
    );
    for (ci, v) in lines {
        let colour = PALETTE[ci % PALETTE.len()];
        let finite: Vec<(i64, i64)> = v
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|p| to_px(p.0 as f64, p.1))
            .collect();
        for w in finite.windows(2) {
            c.line(w[0], w[1], colour, 2);
        }
        if finite.len() == 1 {
            c.line(finite[0], finite[0], colour, 4);
        }
    }
    let (top, bottom) = (label(y1), label(y0));
    c.text(LEFT as i64 - 8 - 8 * top.len() as i64, TOP as i64 - 4, &top, ink);
    c.text(
        LEFT as i64 - 8 - 8 * bottom.len() as i64,
        (H - BOTTOM) as i64 - 6,
        &bottom,
        ink,
    );
    let (first, last) = (label(x0), label(x1));
    c.text(LEFT as i64, (H - BOTTOM) as i64 + 10, &first, ink);
    c.text(
        (W - RIGHT) as i64 - 8 * last.len() as i64,
        (H - BOTTOM) as i64 + 10,
        &last,
        ink,
    );

    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, W as u32, H as u32);
        enc.set_color(png::ColorType::RGB);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(&c.px)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_is_a_png_with_the_lines_in_their_colours() {
        let a = [(1, 0.0), (2, 0.5), (3, 1.0)];
        let b = [(1, 1.0), (3, 0.0)];
        let bytes = draw(&[(0, &a[..]), (1, &b[..])]).unwrap();
        let (info, mut reader) = png::Decoder::new(&bytes[..]).read_info().unwrap();
        assert_eq!((info.width, info.height), (W as u32, H as u32));
        let mut px = vec![0; info.buffer_size()];
        reader.next_frame(&mut px).unwrap();
        let count = |c: [u8; 3]| px.chunks(3).filter(|p| *p == c).count();
        assert!(
            count(PALETTE[0]) > 500 && count(PALETTE[1]) > 500,
            "{} {}",
            count(PALETTE[0]),
            count(PALETTE[1])
        );
        assert_eq!(count(PALETTE[2]), 0);
    }
}
