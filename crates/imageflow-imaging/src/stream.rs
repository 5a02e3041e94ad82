//! The streamed resize: a baseline 4:2:0 JPEG decoded, resampled and encoded band by
//! band, with the decode on one core and the resampling and encoding on another.
//!
//! The whole-image plane path ([`crate::planes`]) decodes every row before it resamples
//! one, then encodes after the last. The decode is sequential (Huffman decoding, about
//! two thirds of it), so at one request at a time the second core idled through it.
//! Here the caller decodes ([`crate::jpeg_rows`]) and sends each band of rows to a
//! helper thread ([`crate::helper::join`]), which resamples every output row as soon
//! as its source rows have arrived ([`crate::vpass`], then [`crate::hpass`]) and hands
//! each 16 output rows to the encoder. When the decode ends, only the last band is
//! left to do. Under load, when no helper is free, the caller does the second half
//! itself after the decode: the same work, in the same order as before.
//!
//! The pixels and the JPEG bytes are those of the whole-image plane path: the same
//! decoder settings, the library's resampling arithmetic, the same encoder settings
//! and edge padding. Tests compare the two byte for byte.

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::LocalKey;

use fast_image_resize::FilterType;
use turbojpeg::{DecompressHeader, ScalingFactor, Subsamp};

use crate::decode::{is_harmless_jpeg_warning, jpeg_damage};
use crate::error::ImagingError;
use crate::helper::join;
use crate::hpass::HorizontalPass;
use crate::jpeg_rows::{BandLayout, Decoding, RowDecoder, RowEncoder, Start};
use crate::planes::chroma_420;
use crate::resize::ResizeQuality;
use crate::vpass::VerticalPass;

thread_local! {
    /// One raw decoder and encoder per thread ([`with_instance`]). The decoder's
    /// libjpeg object is recreated for each image (`csrc/jpeg_stream.c`), so no tables
    /// carry over; the encoder keeps its output buffer between images.
    pub(crate) static DECODER: RefCell<Option<RowDecoder>> = const { RefCell::new(None) };
    static ENCODER: RefCell<Option<RowEncoder>> = const { RefCell::new(None) };
}

/// Decoded rows of the three planes, cropped to the planes' widths.
struct Rows {
    y: Vec<u8>,
    cb: Vec<u8>,
    cr: Vec<u8>,
}

/// One plane's resampling: the source and output sizes and the passes they need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) src: (u32, u32),
    pub(crate) dst: (u32, u32),
    pub(crate) filter: FilterType,
}

impl Geometry {
    /// Whether this crate's passes can do it (else the whole-image path's library
    /// fallback must): a width change needs [`HorizontalPass`].
    pub(crate) fn supported(&self) -> bool {
        let vertical = self.src.1 == self.dst.1
            || VerticalPass::cached(self.src.1, self.dst.1, self.filter).is_some();
        let horizontal = self.src.0 == self.dst.0
            || HorizontalPass::cached(self.src.0, self.dst.0, self.filter).is_some();
        vertical && horizontal
    }
}

/// Resizes `data` (a JPEG the caller has checked against its limits) to `width` x
/// `height` through the decode at `scale`, and encodes it as a 4:2:0 JPEG at
/// `quality`'s JPEG quality. `Ok(None)`: this JPEG or this resize cannot be streamed
/// (not baseline 4:2:0, or a pass the library must do), so the caller takes the
/// whole-image path.
pub(crate) fn resize_streamed(
    data: &[u8],
    jpeg: &DecompressHeader,
    scale: ScalingFactor,
    (width, height): (u32, u32),
    quality: ResizeQuality,
) -> Result<Option<Vec<u8>>, ImagingError> {
    if jpeg.subsamp != Subsamp::Sub2x2 || jpeg.is_lossless || 8 % scale.denom() != 0 {
        return Ok(None);
    }
    let scale_eighths = (scale.num() * 8 / scale.denom()) as u32;
    // Both sides are at most the header's, which passed the u32 limits check.
    let luma_src = (
        scale.scale(jpeg.width) as u32,
        scale.scale(jpeg.height) as u32,
    );
    let filter = quality.filter();
    let luma = Geometry {
        src: luma_src,
        dst: (width, height),
        filter,
    };
    let chroma = Geometry {
        src: chroma_420(luma_src.0, luma_src.1),
        dst: chroma_420(width, height),
        filter,
    };
    if !(luma.supported() && chroma.supported()) {
        return Ok(None);
    }
    let jpeg_quality = quality.jpeg_quality();
    with_instance(&DECODER, RowDecoder::new, |decoder| {
        let mut decoding = match decoder.start(data, scale_eighths) {
            Ok(Start::Started(decoding)) => decoding,
            Ok(Start::Unsupported) => return Ok(None),
            Err(msg) => return Err(jpeg_damage(&msg)),
        };
        let layout = decoding.layout();
        if (layout.width, layout.height) != (luma_src.0 as usize, luma_src.1 as usize) {
            return Err(ImagingError::Encode(format!(
                "the row decoder gives {}x{} at {scale_eighths}/8, the header says {}x{}",
                layout.width, layout.height, luma_src.0, luma_src.1
            )));
        }
        let (bands, rows) = mpsc::channel();
        let (decoded, encoded) = join(
            move || {
                // The encoder side learns of the end (or of a failure) from the close.
                let sent_all = send_bands(&mut decoding, layout, &bands)?;
                drop(bands);
                if !sent_all {
                    // The encoder side stopped first; its error is the one to report.
                    return Ok(None);
                }
                decoding.finish().map_err(|msg| jpeg_damage(&msg))
            },
            move || resample_and_encode(&rows, luma, chroma, jpeg_quality),
        );
        // A decode failure explains the encoder side's, so it is the one reported.
        match decoded? {
            Some(warning) if !is_harmless_jpeg_warning(&warning) => Err(jpeg_damage(&warning)),
            _ => encoded.map(Some),
        }
    })
}

/// Runs `f` with this thread's instance in `cell` (made by `new` when there is none),
/// and drops the instance after an error, so no state from a damaged stream reaches
/// the next image.
pub(crate) fn with_instance<C: 'static, T>(
    cell: &'static LocalKey<RefCell<Option<C>>>,
    new: fn() -> Result<C, ImagingError>,
    f: impl FnOnce(&mut C) -> Result<T, ImagingError>,
) -> Result<T, ImagingError> {
    cell.with(|cell| {
        let mut slot = cell.borrow_mut();
        let instance = match slot.as_mut() {
            Some(instance) => instance,
            None => slot.insert(new()?),
        };
        let result = f(instance);
        if result.is_err() {
            *slot = None;
        }
        result
    })
}

/// Luma rows sent to the other side at a time: each send can wake it, and a wake-up
/// costs about what resampling a few rows does, so decoder bands (8 rows at 1/2 scale)
/// go in fours. The encoder takes 16 rows a band, so this keeps it fed.
pub(crate) const SEND_ROWS: usize = 32;

/// Decodes every band and sends its rows, cropped to the planes' sizes, in batches of
/// [`SEND_ROWS`]. `Ok(false)`: it stopped early because the other side hung up (which
/// has an error of its own).
fn send_bands(
    decoding: &mut Decoding<'_>,
    layout: BandLayout,
    bands: &mpsc::Sender<Rows>,
) -> Result<bool, ImagingError> {
    let (width, height) = (layout.width, layout.height);
    let (chroma_w, chroma_h) = (width.div_ceil(2), height.div_ceil(2));
    let chroma_rows = layout.luma_rows / 2;
    let crop = |out: &mut Vec<u8>, band: &[u8], stride: usize, keep_w: usize, rows: usize| {
        for row in band.chunks_exact(stride).take(rows) {
            out.extend_from_slice(&row[..keep_w]);
        }
    };
    let batch = |rows: usize| Rows {
        y: Vec::with_capacity(width * rows),
        cb: Vec::with_capacity(chroma_w * rows / 2),
        cr: Vec::with_capacity(chroma_w * rows / 2),
    };
    let mut pending = batch(SEND_ROWS);
    let mut sent = 0;
    while sent < height {
        let band = decoding.next_band().map_err(|msg| jpeg_damage(&msg))?;
        let luma_rows = layout.luma_rows.min(height - sent);
        let chroma = chroma_rows.min(chroma_h.saturating_sub(sent / 2));
        crop(&mut pending.y, band.y, layout.luma_stride, width, luma_rows);
        crop(
            &mut pending.cb,
            band.cb,
            layout.chroma_stride,
            chroma_w,
            chroma,
        );
        crop(
            &mut pending.cr,
            band.cr,
            layout.chroma_stride,
            chroma_w,
            chroma,
        );
        sent += luma_rows;
        if (pending.y.len() >= SEND_ROWS * width || sent == height)
            && bands
                .send(std::mem::replace(&mut pending, batch(SEND_ROWS)))
                .is_err()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One plane on the receiving side: the source rows still needed and the passes to
/// resample them.
pub(crate) struct PlaneStream {
    geometry: Geometry,
    /// Source rows `first..first + rows.len() / width`: rows no later output row reads
    /// are dropped, so this stays a few dozen rows, in cache, whatever the image size.
    rows: Vec<u8>,
    first: usize,
    vertical: Option<Rc<VerticalPass>>,
    horizontal: Option<Rc<HorizontalPass>>,
    /// Scratch: vertical output, horizontal output, accumulators.
    between: Vec<u8>,
    out: Vec<u8>,
    acc: Vec<i32>,
}

impl PlaneStream {
    pub(crate) fn new(geometry: Geometry) -> Result<Self, ImagingError> {
        let Geometry { src, dst, filter } = geometry;
        let missing = || ImagingError::Encode(format!("no resampling pass for {src:?} -> {dst:?}"));
        let vertical = if src.1 == dst.1 {
            None
        } else {
            Some(VerticalPass::cached(src.1, dst.1, filter).ok_or_else(missing)?)
        };
        let horizontal = if src.0 == dst.0 {
            None
        } else {
            Some(HorizontalPass::cached(src.0, dst.0, filter).ok_or_else(missing)?)
        };
        Ok(Self {
            geometry,
            rows: Vec::new(),
            first: 0,
            vertical,
            horizontal,
            between: Vec::new(),
            out: Vec::new(),
            acc: Vec::new(),
        })
    }

    /// Appends source rows (whole rows of the source width).
    pub(crate) fn push(&mut self, rows: &[u8]) {
        self.rows.extend_from_slice(rows);
    }

    /// Source rows received so far (dropped ones included).
    pub(crate) fn received(&self) -> usize {
        self.first + self.rows.len() / self.geometry.src.0 as usize
    }

    /// Source rows that output rows up to `end` (exclusive) need.
    pub(crate) fn needed(&self, end: usize) -> usize {
        match (&self.vertical, end) {
            (_, 0) => 0,
            (Some(pass), _) => pass.rows_needed(end - 1),
            (None, _) => end,
        }
    }

    /// Drops the source rows that no output row from `next` on reads.
    pub(crate) fn forget_before(&mut self, next: usize) {
        let keep_from = match &self.vertical {
            Some(pass) => pass.first_row(next),
            None => next,
        }
        .min(self.received());
        if keep_from > self.first {
            let width = self.geometry.src.0 as usize;
            self.rows.drain(..(keep_from - self.first) * width);
            self.first = keep_from;
        }
    }

    /// Output rows `rows` into `band` (rows of `stride` bytes), each padded by
    /// repeating its last sample; band rows past `rows` repeat the last output row,
    /// as the whole-image encoder pads a partial last band.
    fn fill(&mut self, rows: Range<usize>, band: &mut [u8], stride: usize) {
        let dst_w = self.geometry.dst.0 as usize;
        let next = rows.end;
        let resampled = self.resample(rows);
        let mut last: &[u8] = &[];
        for (i, out) in band.chunks_exact_mut(stride).enumerate() {
            if let Some(row) = resampled.chunks_exact(dst_w).nth(i) {
                last = row;
            }
            out[..dst_w].copy_from_slice(last);
            let edge = last[dst_w - 1];
            out[dst_w..].fill(edge);
        }
        self.forget_before(next);
    }

    /// Output rows `rows` (all of whose source rows have arrived), as rows of the
    /// output width. Rows before them must not be asked for again: call
    /// [`Self::forget_before`] with `rows.end` once done with them.
    pub(crate) fn resample(&mut self, rows: Range<usize>) -> &[u8] {
        let (src_w, dst_w) = (self.geometry.src.0 as usize, self.geometry.dst.0 as usize);
        let count = rows.len();
        let vertical: &[u8] = match &self.vertical {
            Some(pass) => {
                self.between.resize(count * src_w, 0);
                pass.run(
                    &self.rows,
                    self.first,
                    src_w,
                    rows,
                    &mut self.between,
                    &mut self.acc,
                );
                &self.between
            }
            None => &self.rows[(rows.start - self.first) * src_w..(rows.end - self.first) * src_w],
        };
        match &self.horizontal {
            Some(pass) => {
                self.out.resize(count * dst_w, 0);
                pass.run(vertical, &mut self.out);
                &self.out
            }
            None => vertical,
        }
    }
}

/// The receiving side: resamples each plane as its rows arrive and encodes every 16
/// output rows. Fails if the rows stop before the image's end (the decode failed and
/// reports why).
fn resample_and_encode(
    bands: &mpsc::Receiver<Rows>,
    luma: Geometry,
    chroma: Geometry,
    quality: u8,
) -> Result<Vec<u8>, ImagingError> {
    let mut y = PlaneStream::new(luma)?;
    let mut cb = PlaneStream::new(chroma)?;
    let mut cr = PlaneStream::new(chroma)?;
    let (width, height) = luma.dst;
    let chroma_h = chroma.dst.1 as usize;
    with_instance(&ENCODER, RowEncoder::new, |encoder| {
        let (luma_stride, chroma_stride) = encoder.start(width, height, quality)?;
        let band_rows = RowEncoder::BAND_ROWS;
        let mut y_band = vec![0u8; band_rows * luma_stride];
        let mut cb_band = vec![0u8; band_rows / 2 * chroma_stride];
        let mut cr_band = cb_band.clone();
        for first in (0..height as usize).step_by(band_rows) {
            let luma_rows = first..(first + band_rows).min(height as usize);
            let chroma_first = first / 2;
            let chroma_rows = chroma_first..(chroma_first + band_rows / 2).min(chroma_h);
            while y.received() < y.needed(luma_rows.end)
                || cb.received() < cb.needed(chroma_rows.end)
            {
                let Ok(rows) = bands.recv() else {
                    return Err(ImagingError::Encode(
                        "the JPEG decode stopped before the last row".to_owned(),
                    ));
                };
                y.push(&rows.y);
                cb.push(&rows.cb);
                cr.push(&rows.cr);
            }
            y.fill(luma_rows, &mut y_band, luma_stride);
            cb.fill(chroma_rows.clone(), &mut cb_band, chroma_stride);
            cr.fill(chroma_rows, &mut cr_band, chroma_stride);
            encoder.write(&y_band, &cb_band, &cr_band)?;
        }
        encoder.finish()
    })
}
