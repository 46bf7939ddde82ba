//! A flame graph as a standalone SVG, from sampled stacks.
//!
//! Written here instead of using `inferno`, whose CDDL-1.0 licence the project does not take on.
//! Stacks are merged into a tree (root at the bottom, callees above); each frame is a box whose
//! width is its share of the samples, with a `<title>` tooltip (name, samples, percent). Frames
//! narrower than [`MIN_WIDTH_PX`] and levels deeper than [`MAX_DEPTH`] are left out, so the SVG
//! stays bounded whatever the profile.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::text::html_escape;

/// Width of the graph in pixels.
pub const WIDTH_PX: f64 = 1200.0;
/// Height of one frame in pixels.
pub const FRAME_PX: f64 = 16.0;
/// Frames narrower than this are not drawn.
pub const MIN_WIDTH_PX: f64 = 0.3;
/// Deepest level drawn.
pub const MAX_DEPTH: usize = 256;

#[derive(Default)]
struct Node {
    samples: u64,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn depth(&self) -> usize {
        1 + self.children.values().map(Node::depth).max().unwrap_or(0)
    }
}

/// Renders `stacks` (frames root first, and a sample count each) under `title`. An empty profile
/// renders a graph that says so.
pub fn svg(title: &str, stacks: impl IntoIterator<Item = (Vec<String>, u64)>) -> String {
    let mut root = Node::default();
    for (frames, n) in stacks {
        root.samples += n;
        let mut node = &mut root;
        for f in frames.into_iter().take(MAX_DEPTH) {
            node = node.children.entry(f).or_default();
            node.samples += n;
        }
    }
    let depth = root.depth().min(MAX_DEPTH + 1);
    let height = (depth as f64 + 3.0) * FRAME_PX + 10.0;
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r##"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{w}" height="{height}" viewBox="0 0 {w} {height}" xmlns="http://www.w3.org/2000/svg">
<style>text {{ font-family: monospace; font-size: 11px; fill: #000; }} rect:hover {{ stroke: #000; }}</style>
<rect x="0" y="0" width="{w}" height="{height}" fill="#f8f8f0"/>
<text x="{cx}" y="16" text-anchor="middle" style="font-size:14px">{title}</text>
<text x="10" y="{sy}">{total} samples</text>
"##,
        w = WIDTH_PX,
        cx = WIDTH_PX / 2.0,
        title = html_escape(title),
        sy = height - 6.0,
        total = root.samples,
    );
    if root.samples == 0 {
        out.push_str(
            "<text x=\"10\" y=\"40\">no samples: the server used no CPU while profiled</text>\n",
        );
    } else {
        let base_y = height - 2.0 * FRAME_PX - 10.0;
        draw(
            &mut out,
            "all",
            &root,
            0.0,
            base_y,
            WIDTH_PX / root.samples as f64,
            root.samples,
            0,
        );
    }
    out.push_str("</svg>\n");
    out
}

#[allow(clippy::too_many_arguments)]
fn draw(
    out: &mut String,
    name: &str,
    node: &Node,
    x: f64,
    y: f64,
    px_per_sample: f64,
    total: u64,
    depth: usize,
) {
    let w = node.samples as f64 * px_per_sample;
    if w < MIN_WIDTH_PX || depth > MAX_DEPTH {
        return;
    }
    let pct = 100.0 * node.samples as f64 / total as f64;
    let (r, g, b) = color(name);
    let _ = writeln!(
        out,
        "<g><title>{} ({} samples, {pct:.2}%)</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"rgb({r},{g},{b})\" rx=\"2\"/>{}</g>",
        html_escape(name),
        node.samples,
        label(name, w, x, y),
        h = FRAME_PX - 1.0,
    );
    let mut cx = x;
    for (child, c) in &node.children {
        draw(
            out,
            child,
            c,
            cx,
            y - FRAME_PX,
            px_per_sample,
            total,
            depth + 1,
        );
        cx += c.samples as f64 * px_per_sample;
    }
}

/// The visible label: as much of the name as fits (≈ 7 px a character), or nothing.
fn label(name: &str, w: f64, x: f64, y: f64) -> String {
    let fits = ((w - 6.0) / 7.0).floor();
    if fits < 3.0 {
        return String::new();
    }
    let fits = fits as usize;
    let shown: String = if name.chars().count() > fits {
        let mut s: String = name.chars().take(fits.saturating_sub(2)).collect();
        s.push_str("..");
        s
    } else {
        name.to_string()
    };
    format!(
        "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
        x + 3.0,
        y + FRAME_PX - 4.0,
        html_escape(&shown)
    )
}

/// A warm colour derived from the name, so a function keeps its colour across graphs.
fn color(name: &str) -> (u8, u8, u8) {
    let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    (
        205 + (h % 50) as u8,
        (h >> 8) as u8 % 180 + 40,
        (h >> 16) as u8 % 55,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(frames: &[&str], n: u64) -> (Vec<String>, u64) {
        (frames.iter().map(|s| s.to_string()).collect(), n)
    }

    #[test]
    fn merges_stacks_and_sizes_boxes_by_samples() {
        let s = svg(
            "t",
            vec![
                st(&["main", "work", "hot"], 75),
                st(&["main", "work", "cold"], 25),
            ],
        );
        assert!(s.starts_with("<?xml"), "{s}");
        assert!(s.contains("<title>all (100 samples, 100.00%)</title>"));
        assert!(s.contains("<title>work (100 samples, 100.00%)</title>"));
        assert!(s.contains("<title>hot (75 samples, 75.00%)</title>"));
        assert!(s.contains("<title>cold (25 samples, 25.00%)</title>"));
        assert!(s.contains("width=\"900.0\""), "hot is 3/4 of 1200 px");
        assert!(s.contains("width=\"300.0\""));
        assert!(s.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn escapes_names_and_drops_slivers() {
        let s = svg(
            "a<b>",
            vec![st(&["<T as Trait>::f&g"], 100_000), st(&["tiny"], 1)],
        );
        assert!(s.contains("&lt;T as Trait&gt;::f&amp;g"));
        assert!(!s.contains("<title>tiny"), "narrower than MIN_WIDTH_PX");
        assert!(s.contains("a&lt;b&gt;"));
    }

    #[test]
    fn an_empty_profile_says_so() {
        let s = svg("t", Vec::new());
        assert!(s.contains("no samples"));
    }
}
