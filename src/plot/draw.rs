//! The drawing shared by `rankcollapse plot` and the reproductions' figures: the embedded font
//! and the writing of one drawing as both SVG and PNG, so that every image is made the same way.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// The embedded font (DejaVu Sans, see `assets/README` for its license).
const FONT: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/DejaVuSans.ttf"));
/// The family name the embedded font is registered under.
pub(crate) const FAMILY: &str = "sans-serif";

/// A picture that can be drawn on any plotters backend, so that one description gives both the
/// SVG and the PNG.
pub(crate) trait Drawing {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Draws `drawing` at `size` pixels into `svg_path` and `png_path`, after registering the
/// embedded font. `what(format, path)` says, in an error, what was being drawn (`format` is
/// "SVG" or "PNG"); a failure to write the PNG names its file.
pub(crate) fn save_svg_and_png(
    drawing: &impl Drawing,
    size: (u32, u32),
    svg_path: &Path,
    png_path: &Path,
    what: impl Fn(&str, &Path) -> String,
) -> anyhow::Result<()> {
    register_embedded_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        drawing.draw(&root).map_err(|e| anyhow!("{}: {e}", what("SVG", svg_path)))?;
        root.present().map_err(|e| anyhow!("{}: {e}", what("SVG", svg_path)))?;
    }
    std::fs::write(svg_path, svg).with_context(|| format!("writing {}", svg_path.display()))?;
    {
        let root = BitMapBackend::new(png_path, size).into_drawing_area();
        drawing.draw(&root).map_err(|e| anyhow!("{}: {e}", what("PNG", png_path)))?;
        root.present().map_err(|e| anyhow!("writing {}: {e}", png_path.display()))?;
    }
    Ok(())
}

/// Registers the embedded font once per process; every text style names [`FAMILY`].
fn register_embedded_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        bail!("the embedded font assets/DejaVuSans.ttf could not be parsed")
    }
}

/// Splits (x, Option<v>) into maximal runs of drawable values: a `None` breaks the line there.
pub(crate) fn segments<X: Copy, T: Copy>(points: &[(X, Option<T>)]) -> Vec<Vec<(X, T)>> {
    let mut out: Vec<Vec<(X, T)>> = Vec::new();
    let mut cur: Vec<(X, T)> = Vec::new();
    for &(l, v) in points {
        match v {
            Some(v) => cur.push((l, v)),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_split_lines() {
        let pts = [(0, Some(1.0)), (1, None), (2, Some(2.0)), (3, Some(3.0)), (4, None)];
        assert_eq!(segments(&pts), vec![vec![(0, 1.0)], vec![(2, 2.0), (3, 3.0)]]);
    }
}
