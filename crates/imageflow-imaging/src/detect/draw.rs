//! Boxes and labels drawn into the pixels, for a person to look at.

use crate::image::Image;

/// One box to draw, in the image's pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotation {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    /// Printed above the box, e.g. `cat 0.91` (ASCII; other characters print as `?`).
    pub label: String,
    /// Picks the colour, so one class keeps one colour (the class id).
    pub colour_index: usize,
}

/// A palette of 20 distinct colours (the one Ultralytics draws with).
const PALETTE: [[u8; 3]; 20] = [
    [255, 56, 56],
    [255, 157, 151],
    [255, 112, 31],
    [255, 178, 29],
    [207, 210, 49],
    [72, 249, 10],
    [146, 204, 23],
    [61, 219, 134],
    [26, 147, 52],
    [0, 212, 187],
    [44, 153, 168],
    [0, 194, 255],
    [52, 69, 147],
    [100, 115, 255],
    [0, 24, 236],
    [132, 56, 255],
    [82, 0, 133],
    [203, 56, 255],
    [255, 149, 200],
    [255, 55, 199],
];

/// Draws each annotation as a rectangle outline with a filled label tab.
/// Line width and text size follow the image size (2 px and 8 px text on a
/// 640-pixel image, 4 px and 32 px text on 1920x1080). Coordinates outside
/// the image are clipped; nothing here can panic on odd boxes.
pub fn draw_detections(image: &mut Image, annotations: &[Annotation]) {
    let (width, height) = (image.width(), image.height());
    let longest = width.max(height);
    let thickness = (longest / 480).max(2);
    let text_scale = ((longest + 250) / 500).max(1);
    let mut canvas = Canvas::new(image);
    for a in annotations {
        let colour = PALETTE[a.colour_index % PALETTE.len()];
        let clamp_x = |v: f32| (v.max(0.0) as u32).min(width - 1);
        let clamp_y = |v: f32| (v.max(0.0) as u32).min(height - 1);
        let (x1, y1, x2, y2) = (clamp_x(a.x1), clamp_y(a.y1), clamp_x(a.x2), clamp_y(a.y2));
        if x2 < x1 || y2 < y1 {
            continue;
        }
        let t = thickness.min(x2 - x1 + 1).min(y2 - y1 + 1);
        canvas.fill(x1, y1, x2 + 1, y1 + t, colour);
        canvas.fill(x1, (y2 + 1).saturating_sub(t), x2 + 1, y2 + 1, colour);
        canvas.fill(x1, y1, x1 + t, y2 + 1, colour);
        canvas.fill((x2 + 1).saturating_sub(t), y1, x2 + 1, y2 + 1, colour);

        let glyph = 8 * text_scale;
        let margin = text_scale.max(1);
        let tab_w = a.label.chars().count() as u32 * glyph + 2 * margin;
        let tab_h = glyph + 2 * margin;
        // Above the box when there is room, else inside its top edge.
        let tab_y = if y1 >= tab_h { y1 - tab_h } else { y1 };
        canvas.fill(x1, tab_y, x1 + tab_w, tab_y + tab_h, colour);
        let luma =
            299 * u32::from(colour[0]) + 587 * u32::from(colour[1]) + 114 * u32::from(colour[2]);
        let ink = if luma > 150_000 {
            [0, 0, 0]
        } else {
            [255, 255, 255]
        };
        for (i, ch) in a.label.chars().enumerate() {
            let x = x1 + margin + i as u32 * glyph;
            canvas.glyph(x, tab_y + margin, ch, text_scale, ink);
        }
    }
}

struct Canvas<'a> {
    width: u32,
    height: u32,
    channels: usize,
    pixels: &'a mut [u8],
}

impl<'a> Canvas<'a> {
    fn new(image: &'a mut Image) -> Self {
        Canvas {
            width: image.width(),
            height: image.height(),
            channels: usize::from(image.channels()),
            pixels: image.pixels_mut(),
        }
    }

    /// Fills `[x0, x1) x [y0, y1)`, clipped to the image.
    fn fill(&mut self, x0: u32, y0: u32, x1: u32, y1: u32, rgb: [u8; 3]) {
        let (x1, y1) = (x1.min(self.width), y1.min(self.height));
        for y in y0..y1 {
            let row = y as usize * self.width as usize;
            for x in x0..x1 {
                let at = (row + x as usize) * self.channels;
                self.pixels[at..at + 3].copy_from_slice(&rgb);
                if self.channels == 4 {
                    self.pixels[at + 3] = 255;
                }
            }
        }
    }

    /// One 8x8 glyph scaled by `scale`, top-left at (`x`, `y`).
    fn glyph(&mut self, x: u32, y: u32, ch: char, scale: u32, rgb: [u8; 3]) {
        let code = if ch.is_ascii() && !ch.is_ascii_control() {
            ch as usize
        } else {
            usize::from(b'?')
        };
        let rows = font8x8::legacy::BASIC_LEGACY[code];
        for (dy, bits) in rows.iter().enumerate() {
            for dx in 0..8u32 {
                // Bit 0 is the leftmost pixel.
                if bits & (1 << dx) != 0 {
                    let px = x + dx * scale;
                    let py = y + dy as u32 * scale;
                    self.fill(px, py, px + scale, py + scale, rgb);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pixel(image: &Image, x: u32, y: u32) -> [u8; 3] {
        let at = ((y * image.width() + x) * 3) as usize;
        let p = &image.pixels()[at..at + 3];
        [p[0], p[1], p[2]]
    }

    #[test]
    fn draws_the_outline_and_a_label_and_leaves_the_inside() {
        let mut image = Image::new(200, 100, 3, vec![0; 200 * 100 * 3]).unwrap();
        let box_ = Annotation {
            x1: 50.0,
            y1: 40.0,
            x2: 150.0,
            y2: 90.0,
            label: "cat 0.91".into(),
            colour_index: 0,
        };
        draw_detections(&mut image, &[box_]);
        let red = PALETTE[0];
        assert_eq!(pixel(&image, 50, 60), red, "left edge");
        assert_eq!(pixel(&image, 150, 60), red, "right edge");
        assert_eq!(pixel(&image, 100, 90), red, "bottom edge");
        assert_eq!(pixel(&image, 100, 65), [0, 0, 0], "inside untouched");
        // The label tab sits above the box and has text in it.
        let tab: Vec<[u8; 3]> = (50..120)
            .flat_map(|x| (30..40).map(move |y| (x, y)))
            .map(|(x, y)| pixel(&image, x, y))
            .collect();
        assert!(tab.contains(&red));
        assert!(tab.iter().any(|p| *p != red), "text is drawn");
        assert_eq!(pixel(&image, 10, 10), [0, 0, 0], "far away untouched");
    }

    #[test]
    fn boxes_outside_or_degenerate_do_not_panic() {
        let mut image = Image::new(10, 10, 4, vec![0; 10 * 10 * 4]).unwrap();
        let odd = [
            (-50.0, -50.0, 500.0, 500.0),
            (9.5, 9.5, 9.9, 9.9),
            (8.0, 2.0, 3.0, 1.0),
            (f32::NAN, 0.0, 5.0, 5.0),
        ];
        let annotations: Vec<Annotation> = odd
            .iter()
            .enumerate()
            .map(|(i, &(x1, y1, x2, y2))| Annotation {
                x1,
                y1,
                x2,
                y2,
                label: "naïve label".into(),
                colour_index: i,
            })
            .collect();
        draw_detections(&mut image, &annotations);
        // Alpha of drawn pixels is opaque.
        assert_eq!(image.pixels()[3], 255);
    }
}
