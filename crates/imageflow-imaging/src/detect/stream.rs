//! The streamed letterbox: a JPEG decoded to RGB a few rows at a time on the caller,
//! and resampled into the model's input tensor on a helper thread as the rows arrive.
//!
//! The whole-image path ([`super::letterbox_into`] after a DCT-scaled decode) decodes
//! every row, then resamples, then converts to floats, all on one core. The decode is
//! sequential (Huffman decoding), so at one request at a time the second core idled
//! through it. Here, as in the streamed resize ([`crate::stream`]), the caller decodes
//! ([`crate::jpeg_rows`], TurboJPEG's RGB settings) and sends each 32 rows to a helper
//! ([`crate::helper::join`]). The helper fills the tensor with the padding's grey
//! while the first rows decode, then runs the library's bilinear vertical pass on the
//! interleaved rows ([`crate::vpass`]), splits the channels, runs the horizontal pass on
//! each ([`crate::hpass`]) and writes the floats. When the decode ends, only the last
//! rows are left to do. Under load, when no helper is free, the caller does the second
//! half after the decode.
//!
//! The tensor is the whole-image path's, value for value: the same decoder settings and
//! the library's resampling arithmetic (a `U8x3` pass is the `U8` pass on each channel).
//! Tests compare the two.

use std::sync::mpsc;

use fast_image_resize::FilterType;
use turbojpeg::{DecompressHeader, ScalingFactor};

use super::letterbox::{Letterbox, PAD_VALUE, to_unit};
use crate::decode::{is_harmless_jpeg_warning, jpeg_damage};
use crate::error::ImagingError;
use crate::helper::join;
use crate::hpass::HorizontalPass;
use crate::jpeg_rows::{RgbDecoding, RowDecoder, Start};
use crate::stream::{DECODER, Geometry, PlaneStream, SEND_ROWS, with_instance};

/// The letterbox's resampling filter (the whole-image path's `ResizeQuality::Fast`).
const FILTER: FilterType = FilterType::Bilinear;

/// The planar RGB 0..1 tensor of `geometry` (see [`super::letterbox_into`]) from `data`,
/// a JPEG shown as stored whose header `jpeg` is, decoded at `scale`. `Ok(None)`: this
/// JPEG or this geometry cannot be streamed (not a single-scan 8-bit YCbCr JPEG, or a
/// pass only the library has), so the caller takes the whole-image path.
pub(crate) fn letterbox_streamed(
    data: &[u8],
    jpeg: &DecompressHeader,
    scale: ScalingFactor,
    geometry: Letterbox,
) -> Result<Option<Vec<f32>>, ImagingError> {
    if jpeg.is_lossless || 8 % scale.denom() != 0 {
        return Ok(None);
    }
    let scale_eighths = (scale.num() * 8 / scale.denom()) as u32;
    // Both sides are at most the header's, which passed the u32 limits check.
    let src = (
        scale.scale(jpeg.width) as u32,
        scale.scale(jpeg.height) as u32,
    );
    let content = (geometry.content_width, geometry.content_height);
    let resampling = Geometry {
        src,
        dst: content,
        filter: FILTER,
    };
    if !resampling.supported() {
        return Ok(None);
    }
    with_instance(&DECODER, RowDecoder::new, |decoder| {
        let mut decoding = match decoder.start_rgb(data, scale_eighths) {
            Ok(Start::Started(decoding)) => decoding,
            Ok(Start::Unsupported) => return Ok(None),
            Err(msg) => return Err(jpeg_damage(&msg)),
        };
        if decoding.size() != (src.0 as usize, src.1 as usize) {
            return Err(ImagingError::Encode(format!(
                "the row decoder gives {:?} at {scale_eighths}/8, the header says {src:?}",
                decoding.size()
            )));
        }
        // Allocated here, where it is freed after the last request's (in process, the
        // same thread's heap keeps it warm: no page faults, unlike a helper's), and
        // filled on the helper (nothing is zeroed on the way).
        let tensor = Vec::with_capacity(geometry.tensor_len());
        let (batches, rows) = mpsc::channel();
        let (decoded, tensor) = join(
            move || {
                // The helper learns of the end (or of a failure) from the close.
                let sent_all = send_rows(&mut decoding, &batches)?;
                drop(batches);
                if !sent_all {
                    // The helper stopped first; its error is the one to report.
                    return Ok(None);
                }
                decoding.finish().map_err(|msg| jpeg_damage(&msg))
            },
            move || resample_into_tensor(&rows, src, geometry, tensor),
        );
        // A decode failure explains the helper's, so it is the one reported.
        match decoded? {
            Some(warning) if !is_harmless_jpeg_warning(&warning) => Err(jpeg_damage(&warning)),
            _ => tensor.map(Some),
        }
    })
}

/// Decodes every row and sends them in batches of [`SEND_ROWS`]. `Ok(false)`: it
/// stopped early because the helper hung up (which has an error of its own).
fn send_rows(
    decoding: &mut RgbDecoding<'_>,
    batches: &mpsc::Sender<Vec<u8>>,
) -> Result<bool, ImagingError> {
    let (width, height) = decoding.size();
    let stride = 3 * width;
    let mut sent = 0;
    while sent < height {
        let mut batch = vec![0u8; SEND_ROWS.min(height - sent) * stride];
        let rows = decoding
            .next_rows(&mut batch)
            .map_err(|msg| jpeg_damage(&msg))?;
        if rows == 0 {
            // libjpeg pads a truncated stream with grey rows, so this is not reached.
            return Err(jpeg_damage("the decoder stopped before the last row"));
        }
        batch.truncate(rows * stride);
        sent += rows;
        if batches.send(batch).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The helper's side: `tensor` (empty) all grey first, then each content row as soon
/// as its source rows have arrived. Fails if the rows stop before the image's end (the
/// decode failed and reports why).
fn resample_into_tensor(
    batches: &mpsc::Receiver<Vec<u8>>,
    (src_w, src_h): (u32, u32),
    geometry: Letterbox,
    mut tensor: Vec<f32>,
) -> Result<Vec<f32>, ImagingError> {
    tensor.resize(geometry.tensor_len(), PAD_VALUE);
    let (content_w, content_h) = (
        geometry.content_width as usize,
        geometry.content_height as usize,
    );
    // The vertical pass runs on interleaved rows: each byte is a column of its own.
    let mut vertical = PlaneStream::new(Geometry {
        src: (3 * src_w, src_h),
        dst: (3 * src_w, geometry.content_height),
        filter: FILTER,
    })?;
    let horizontal = if src_w == geometry.content_width {
        None
    } else {
        Some(
            HorizontalPass::cached(src_w, geometry.content_width, FILTER).ok_or_else(|| {
                ImagingError::Encode(format!(
                    "no horizontal pass for {src_w} -> {content_w} columns"
                ))
            })?,
        )
    };
    let plane_len = geometry.input_width as usize * geometry.input_height as usize;
    let mut split = [Vec::new(), Vec::new(), Vec::new()];
    let mut resampled = Vec::new();
    let mut next = 0;
    while next < content_h {
        let Ok(batch) = batches.recv() else {
            return Err(ImagingError::Encode(
                "the JPEG decode stopped before the last row".to_owned(),
            ));
        };
        vertical.push(&batch);
        let mut end = next;
        while end < content_h && vertical.needed(end + 1) <= vertical.received() {
            end += 1;
        }
        if end == next {
            continue;
        }
        let rows = end - next;
        deinterleave(vertical.resample(next..end), &mut split);
        for (channel, split) in split.iter().enumerate() {
            let row_values: &[u8] = match &horizontal {
                Some(pass) => {
                    resampled.resize(rows * content_w, 0);
                    pass.run(split, &mut resampled);
                    &resampled
                }
                None => split,
            };
            let plane = &mut tensor[channel * plane_len..][..plane_len];
            for (y, values) in (next..end).zip(row_values.chunks_exact(content_w)) {
                let start = (y + geometry.pad_y as usize) * geometry.input_width as usize
                    + geometry.pad_x as usize;
                to_unit(values, &mut plane[start..start + content_w]);
            }
        }
        vertical.forget_before(end);
        next = end;
    }
    Ok(tensor)
}

/// Splits interleaved RGB into its three channels.
fn deinterleave(rgb: &[u8], [r, g, b]: &mut [Vec<u8>; 3]) {
    let pixels = rgb.len() / 3;
    for channel in [&mut *r, &mut *g, &mut *b] {
        channel.resize(pixels, 0);
    }
    let channels = r.iter_mut().zip(g.iter_mut().zip(b.iter_mut()));
    for (px, (r, (g, b))) in rgb.chunks_exact(3).zip(channels) {
        (*r, *g, *b) = (px[0], px[1], px[2]);
    }
}
