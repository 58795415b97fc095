//! The run report's timeline as a PNG: the SVG of [`crate::report`]
//! rasterized with `resvg`, for viewers and pages that show no SVG.
//!
//! Text uses the system's fonts (those `fontdb` finds in the usual folders);
//! the sans-serif face is the first of a few common ones present. A machine
//! with no fonts at all still gets the picture, without its text.

use resvg::{tiny_skia, usvg};

/// Sans-serif faces to use for the SVG's `sans-serif`, best first.
const SANS_SERIF: [&str; 5] = [
    "DejaVu Sans",
    "Liberation Sans",
    "Noto Sans",
    "Arial",
    "FreeSans",
];

/// Rasterizes `svg` (the timeline [`crate::report::render_svg`] draws) to PNG
/// bytes on a white background, at its own size.
pub fn render_png(svg: &str) -> Result<Vec<u8>, String> {
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    let present = |name: &str| {
        fonts
            .faces()
            .any(|f| f.families.iter().any(|(n, _)| n == name))
    };
    if let Some(face) = SANS_SERIF.into_iter().find(|name| present(name)) {
        fonts.set_sans_serif_family(face);
    }
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| format!("the timeline SVG: {e}"))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| format!("a {}x{} picture is too large", size.width(), size.height()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .encode_png()
        .map_err(|e| format!("PNG encoding: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_the_svg_at_its_size_on_white() {
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect x="10" y="5" width="10" height="10" fill="#ff0000"/></svg>"##;
        let png = render_png(svg).expect("drawn");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let pixmap = tiny_skia::Pixmap::decode_png(&png).expect("a PNG");
        assert_eq!((pixmap.width(), pixmap.height()), (40, 20));
        let at = |x: u32, y: u32| pixmap.pixel(x, y).expect("inside");
        assert_eq!(
            (at(0, 0).red(), at(0, 0).green(), at(0, 0).blue()),
            (255, 255, 255)
        );
        assert_eq!(
            (at(15, 10).red(), at(15, 10).green(), at(15, 10).blue()),
            (255, 0, 0)
        );
    }

    #[test]
    fn refuses_what_is_not_svg() {
        assert!(
            render_png("not svg")
                .expect_err("refused")
                .contains("timeline SVG")
        );
    }
}
