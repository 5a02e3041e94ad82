//! libjpeg-turbo's raw decoder and encoder one band of rows at a time, and its RGB
//! decoder a few rows at a time, through the C wrapper in `csrc/jpeg_stream.c` (built by
//! `build.rs` against turbojpeg-sys's library).
//!
//! TurboJPEG decodes or encodes a whole image per call. The streamed resize
//! ([`crate::stream`]) and the streamed letterbox ([`crate::detect::stream`]) need the
//! rows as they come, so that resampling (and encoding) can run beside the decode
//! instead of after it. libjpeg's error handling (`longjmp`) stays
//! inside the C wrapper: every call returns a status and a message, and no `longjmp`
//! crosses a Rust frame.
//!
//! This is the crate's only `unsafe`: the calls into C. Each wrapper type owns its C
//! instance, and band slices borrow the instance, so they cannot outlive the next call
//! that overwrites them.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_uint};
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::ImagingError;

#[repr(C)]
struct RawDecoder {
    _opaque: [u8; 0],
}

#[repr(C)]
struct RawEncoder {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn ifc_decoder_new() -> *mut RawDecoder;
    fn ifc_decoder_free(d: *mut RawDecoder);
    fn ifc_decoder_message(d: *const RawDecoder) -> *const c_char;
    fn ifc_decoder_warnings(d: *const RawDecoder) -> c_int;
    fn ifc_decoder_start(
        d: *mut RawDecoder,
        data: *const u8,
        len: usize,
        scale_num: c_int,
        out: *mut [c_uint; 5],
    ) -> c_int;
    fn ifc_decoder_read(d: *mut RawDecoder, planes: *mut [*const u8; 3]) -> c_int;
    fn ifc_decoder_start_rgb(
        d: *mut RawDecoder,
        data: *const u8,
        len: usize,
        scale_num: c_int,
        out: *mut [c_uint; 2],
    ) -> c_int;
    fn ifc_decoder_read_rgb(
        d: *mut RawDecoder,
        rows: *mut u8,
        stride: usize,
        max_rows: c_uint,
    ) -> c_int;
    fn ifc_decoder_finish(d: *mut RawDecoder) -> c_int;

    fn ifc_encoder_new() -> *mut RawEncoder;
    fn ifc_encoder_free(e: *mut RawEncoder);
    fn ifc_encoder_message(e: *const RawEncoder) -> *const c_char;
    fn ifc_encoder_start(
        e: *mut RawEncoder,
        width: c_uint,
        height: c_uint,
        quality: c_int,
        out: *mut [c_uint; 2],
    ) -> c_int;
    fn ifc_encoder_write(e: *mut RawEncoder, y: *const u8, cb: *const u8, cr: *const u8) -> c_int;
    fn ifc_encoder_finish(e: *mut RawEncoder, data: *mut *const u8, len: *mut usize) -> c_int;
}

/// The wrapper's message buffer as a Rust string.
fn message(raw: *const c_char) -> String {
    if raw.is_null() {
        return "no message".to_owned();
    }
    // SAFETY: the wrapper's messages are NUL-terminated buffers inside the instance,
    // which outlives this call.
    unsafe { CStr::from_ptr(raw) }
        .to_string_lossy()
        .into_owned()
}

/// A libjpeg decompressor that reads raw YCbCr planes band by band, or RGB rows a few
/// at a time.
#[derive(Debug)]
pub(crate) struct RowDecoder {
    raw: NonNull<RawDecoder>,
}

/// How a started decode hands out its bands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BandLayout {
    /// Luma width and height at the chosen scale.
    pub(crate) width: usize,
    pub(crate) height: usize,
    /// Luma rows per band (chroma has half as many).
    pub(crate) luma_rows: usize,
    /// Bytes per row in a band: whole blocks, at least the plane's width.
    pub(crate) luma_stride: usize,
    pub(crate) chroma_stride: usize,
}

/// One band's rows, valid until the next read.
#[derive(Debug)]
pub(crate) struct Band<'a> {
    pub(crate) y: &'a [u8],
    pub(crate) cb: &'a [u8],
    pub(crate) cr: &'a [u8],
}

/// A decode in progress: borrows the decoder and the JPEG bytes it reads.
#[derive(Debug)]
pub(crate) struct Decoding<'a> {
    decoder: &'a mut RowDecoder,
    layout: BandLayout,
    _data: PhantomData<&'a [u8]>,
}

/// The outcome of [`RowDecoder::start`] ([`Decoding`]) and [`RowDecoder::start_rgb`]
/// ([`RgbDecoding`]).
#[derive(Debug)]
pub(crate) enum Start<D> {
    Started(D),
    /// Not a JPEG this decode takes (see each start): the whole-image path handles it.
    Unsupported,
}

/// An RGB decode in progress: borrows the decoder and the JPEG bytes it reads.
#[derive(Debug)]
pub(crate) struct RgbDecoding<'a> {
    decoder: &'a mut RowDecoder,
    /// Width and height at the chosen scale.
    width: usize,
    height: usize,
    _data: PhantomData<&'a [u8]>,
}

impl RowDecoder {
    pub(crate) fn new() -> Result<Self, ImagingError> {
        // SAFETY: no arguments; a null return is handled.
        let raw = unsafe { ifc_decoder_new() };
        NonNull::new(raw)
            .map(|raw| Self { raw })
            .ok_or_else(|| ImagingError::Encode("could not create a JPEG decoder".to_owned()))
    }

    fn message(&self) -> String {
        // SAFETY: `raw` is a live instance.
        message(unsafe { ifc_decoder_message(self.raw.as_ptr()) })
    }

    /// Reads the header of `data` and starts decoding its planes at `scale_eighths`/8
    /// (1, 2, 4 or 8). Only a baseline 8-bit 4:2:0 YCbCr JPEG is started. An `Err`
    /// carries libjpeg's message.
    pub(crate) fn start<'a>(
        &'a mut self,
        data: &'a [u8],
        scale_eighths: u32,
    ) -> Result<Start<Decoding<'a>>, String> {
        let mut out = [0 as c_uint; 5];
        // SAFETY: `data` outlives the returned `Decoding` (the lifetime ties them), and
        // the C side only reads it; `out` is a live array of five.
        let status = unsafe {
            ifc_decoder_start(
                self.raw.as_ptr(),
                data.as_ptr(),
                data.len(),
                scale_eighths as c_int,
                &mut out,
            )
        };
        match status {
            0 => {
                let [width, height, luma_rows, luma_stride, chroma_stride] =
                    out.map(|v| v as usize);
                Ok(Start::Started(Decoding {
                    decoder: self,
                    layout: BandLayout {
                        width,
                        height,
                        luma_rows,
                        luma_stride,
                        chroma_stride,
                    },
                    _data: PhantomData,
                }))
            }
            1 => Ok(Start::Unsupported),
            _ => Err(self.message()),
        }
    }
}

impl RowDecoder {
    /// Reads the header of `data` and starts decoding it to RGB at `scale_eighths`/8
    /// (1 to 8), as TurboJPEG's whole-image RGB decode does. Only a single-scan 8-bit
    /// YCbCr JPEG is started, whatever its chroma subsampling. An `Err` carries
    /// libjpeg's message.
    pub(crate) fn start_rgb<'a>(
        &'a mut self,
        data: &'a [u8],
        scale_eighths: u32,
    ) -> Result<Start<RgbDecoding<'a>>, String> {
        let mut out = [0 as c_uint; 2];
        // SAFETY: as in `start`: `data` outlives the returned decoding and is only
        // read; `out` is a live array of two.
        let status = unsafe {
            ifc_decoder_start_rgb(
                self.raw.as_ptr(),
                data.as_ptr(),
                data.len(),
                scale_eighths as c_int,
                &mut out,
            )
        };
        match status {
            0 => Ok(Start::Started(RgbDecoding {
                decoder: self,
                width: out[0] as usize,
                height: out[1] as usize,
                _data: PhantomData,
            })),
            1 => Ok(Start::Unsupported),
            _ => Err(self.message()),
        }
    }

    /// The end of either decode ([`Decoding::finish`], [`RgbDecoding::finish`]).
    fn finish(&mut self) -> Result<Option<String>, String> {
        let raw = self.raw.as_ptr();
        // SAFETY: `raw` is a live instance.
        let status = unsafe { ifc_decoder_finish(raw) };
        if status != 0 {
            return Err(self.message());
        }
        // SAFETY: as above.
        let warnings = unsafe { ifc_decoder_warnings(raw) };
        Ok((warnings > 0).then(|| self.message()))
    }
}

impl Drop for RowDecoder {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `ifc_decoder_new` and is freed once, here.
        unsafe { ifc_decoder_free(self.raw.as_ptr()) }
    }
}

impl Decoding<'_> {
    pub(crate) fn layout(&self) -> BandLayout {
        self.layout
    }

    /// The next band: `luma_rows` rows of `luma_stride` bytes, and half as many chroma
    /// rows of `chroma_stride`. Past the image's end the rows are padding.
    pub(crate) fn next_band(&mut self) -> Result<Band<'_>, String> {
        let mut planes = [std::ptr::null::<u8>(); 3];
        // SAFETY: `raw` is a live, started instance; `planes` is a live array of three.
        let status = unsafe { ifc_decoder_read(self.decoder.raw.as_ptr(), &mut planes) };
        if status != 0 || planes.iter().any(|p| p.is_null()) {
            return Err(self.decoder.message());
        }
        let layout = self.layout;
        let luma = layout.luma_rows * layout.luma_stride;
        let chroma = layout.luma_rows / 2 * layout.chroma_stride;
        // SAFETY: the wrapper's band buffer holds `luma_rows` luma rows and
        // `luma_rows / 2` rows of each chroma plane at these strides (ifc_decoder_start),
        // and it is only rewritten by the next read, which needs `&mut self` again.
        Ok(unsafe {
            Band {
                y: std::slice::from_raw_parts(planes[0], luma),
                cb: std::slice::from_raw_parts(planes[1], chroma),
                cr: std::slice::from_raw_parts(planes[2], chroma),
            }
        })
    }

    /// See [`RgbDecoding::finish`].
    pub(crate) fn finish(self) -> Result<Option<String>, String> {
        self.decoder.finish()
    }
}

impl RgbDecoding<'_> {
    /// Width and height at the chosen scale.
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Decodes the next rows into `rows` (whole rows of `3 * width` bytes, as many as
    /// fit) and returns how many it wrote: fewer only at the image's end, 0 after it.
    pub(crate) fn next_rows(&mut self, rows: &mut [u8]) -> Result<usize, String> {
        let stride = 3 * self.width;
        let max_rows = c_uint::try_from(rows.len() / stride.max(1)).unwrap_or(c_uint::MAX);
        // SAFETY: `raw` is a live, started instance; `rows` holds `max_rows` rows of
        // `stride` bytes, each at least the decoder's output row, and the C side writes
        // only those, during this call.
        let status = unsafe {
            ifc_decoder_read_rgb(
                self.decoder.raw.as_ptr(),
                rows.as_mut_ptr(),
                stride,
                max_rows,
            )
        };
        usize::try_from(status).map_err(|_| self.decoder.message())
    }

    /// Reads to the end of the stream. `Ok` carries the first warning, if libjpeg gave
    /// any (a truncated stream is a warning: the missing rows came out grey).
    pub(crate) fn finish(self) -> Result<Option<String>, String> {
        self.decoder.finish()
    }
}

/// A libjpeg compressor fed raw 4:2:0 planes, 16 luma rows at a time.
#[derive(Debug)]
pub(crate) struct RowEncoder {
    raw: NonNull<RawEncoder>,
    strides: (usize, usize),
    rows_left: usize,
}

impl RowEncoder {
    /// Luma rows per band; chroma has half as many.
    pub(crate) const BAND_ROWS: usize = 16;

    pub(crate) fn new() -> Result<Self, ImagingError> {
        // SAFETY: no arguments; a null return is handled.
        let raw = unsafe { ifc_encoder_new() };
        NonNull::new(raw)
            .map(|raw| Self {
                raw,
                strides: (0, 0),
                rows_left: 0,
            })
            .ok_or_else(|| ImagingError::Encode("could not create a JPEG encoder".to_owned()))
    }

    fn error(&self) -> ImagingError {
        // SAFETY: `raw` is a live instance.
        let msg = message(unsafe { ifc_encoder_message(self.raw.as_ptr()) });
        ImagingError::Encode(format!("JPEG encoder: {msg}"))
    }

    /// Starts a `width` x `height` baseline 4:2:0 JPEG at `quality` and returns the
    /// luma and chroma row strides each band must have.
    pub(crate) fn start(
        &mut self,
        width: u32,
        height: u32,
        quality: u8,
    ) -> Result<(usize, usize), ImagingError> {
        let mut out = [0 as c_uint; 2];
        // SAFETY: `raw` is a live instance; `out` is a live array of two.
        let status = unsafe {
            ifc_encoder_start(
                self.raw.as_ptr(),
                width,
                height,
                c_int::from(quality),
                &mut out,
            )
        };
        if status != 0 {
            return Err(self.error());
        }
        self.strides = (out[0] as usize, out[1] as usize);
        self.rows_left = height as usize;
        Ok(self.strides)
    }

    /// Encodes one band: [`Self::BAND_ROWS`] luma rows and half as many rows of each
    /// chroma plane, at the strides [`Self::start`] gave.
    pub(crate) fn write(&mut self, y: &[u8], cb: &[u8], cr: &[u8]) -> Result<(), ImagingError> {
        let (luma, chroma) = self.strides;
        if y.len() != Self::BAND_ROWS * luma
            || cb.len() != Self::BAND_ROWS / 2 * chroma
            || cr.len() != cb.len()
            || self.rows_left == 0
        {
            return Err(ImagingError::Encode(format!(
                "a JPEG band is {} luma rows of {luma} and {} chroma rows of {chroma} bytes, \
                 with rows left to write (got {}, {}, {} bytes, {} rows left)",
                Self::BAND_ROWS,
                Self::BAND_ROWS / 2,
                y.len(),
                cb.len(),
                cr.len(),
                self.rows_left
            )));
        }
        // SAFETY: the three buffers hold a whole band at the started strides (checked
        // above), and the C side only reads them during this call.
        let status =
            unsafe { ifc_encoder_write(self.raw.as_ptr(), y.as_ptr(), cb.as_ptr(), cr.as_ptr()) };
        if status != 0 {
            return Err(self.error());
        }
        self.rows_left = self.rows_left.saturating_sub(Self::BAND_ROWS);
        Ok(())
    }

    /// Ends the image and returns the JPEG.
    pub(crate) fn finish(&mut self) -> Result<Vec<u8>, ImagingError> {
        let mut data = std::ptr::null::<u8>();
        let mut len = 0usize;
        // SAFETY: `raw` is a live instance; `data` and `len` are live out-parameters.
        let status = unsafe { ifc_encoder_finish(self.raw.as_ptr(), &mut data, &mut len) };
        if status != 0 || data.is_null() {
            return Err(self.error());
        }
        // SAFETY: on success the wrapper points at its output buffer of `len` bytes,
        // which stays untouched until the next start (which needs `&mut self`).
        Ok(unsafe { std::slice::from_raw_parts(data, len) }.to_vec())
    }
}

impl Drop for RowEncoder {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `ifc_encoder_new` and is freed once, here.
        unsafe { ifc_encoder_free(self.raw.as_ptr()) }
    }
}
