//! Any bytes through the header probe and the decoder, with limits small enough that a
//! decompression bomb is refused from its header: never a panic, never an image larger
//! than the limits, and a decoded image always agrees with what the probe said. The
//! streamed resize (libjpeg's row-band API through a C wrapper) must give the bytes of
//! the whole-image plane path, and the streamed letterbox (its RGB rows) the whole-image
//! path's tensor, and each fail where its whole-image path fails.
#![no_main]

use imageflow_imaging::{
    Limits, ResizeQuality, ResizeSpec, decode, decode_at_least, letterbox_encoded_streamed,
    letterbox_encoded_whole, probe, resize_encoded_streamed, resize_encoded_whole_planes,
};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_input_bytes: 1 << 20,
    max_pixels: 4_000_000,
    max_dimension: 4096,
};

const THUMBNAIL: ResizeSpec = ResizeSpec {
    width: 64,
    height: 64,
    keep_aspect: true,
    quality: ResizeQuality::Good,
    output_format: None,
};

fuzz_target!(|data: &[u8]| {
    match (
        resize_encoded_streamed(data, &LIMITS, &THUMBNAIL),
        resize_encoded_whole_planes(data, &LIMITS, &THUMBNAIL),
    ) {
        (Ok(Some(streamed)), Ok(whole)) => {
            assert!(
                streamed.data == whole.data,
                "streamed and whole-image bytes differ"
            )
        }
        (Ok(Some(_)), Err(e)) => panic!("streamed a JPEG the whole-image path refuses: {e}"),
        (Err(e), Ok(_)) => panic!("refused a JPEG the whole-image path resizes: {e}"),
        _ => {}
    }
    // A small model input keeps each run short.
    match (
        letterbox_encoded_streamed(data, &LIMITS, 64, 64),
        letterbox_encoded_whole(data, &LIMITS, 64, 64),
    ) {
        (Ok(Some(streamed)), Ok(whole)) => {
            assert!(streamed == whole, "streamed and whole-image tensors differ")
        }
        (Ok(Some(_)), Err(e)) => panic!("streamed a JPEG the whole-image letterbox refuses: {e}"),
        (Err(e), Ok(_)) => panic!("refused a JPEG the whole-image letterbox takes: {e}"),
        _ => {}
    }
    let probed = probe(data, &LIMITS);
    if let Ok(decoded) = decode(data, &LIMITS) {
        let image = &decoded.image;
        let (w, h) = (image.width(), image.height());
        assert!(w > 0 && h > 0, "decoded an empty image");
        assert!(u64::from(w) * u64::from(h) <= LIMITS.max_pixels);
        assert!(w <= LIMITS.max_dimension && h <= LIMITS.max_dimension);
        assert_eq!(
            image.pixels().len(),
            w as usize * h as usize * usize::from(image.channels()),
            "pixel buffer does not match width x height x channels"
        );
        let info = probed.expect("decode succeeded where probe failed");
        assert_eq!(
            (info.width, info.height),
            (w, h),
            "probe and decode disagree on size"
        );
        assert_eq!(info.format, decoded.format);
        // The reduced-resolution path must stay inside the same bounds.
        if let Ok(small) = decode_at_least(data, &LIMITS, 64, 64) {
            assert!(small.image.width() <= w && small.image.height() <= h);
            assert_eq!((small.original_width, small.original_height), (w, h));
        }
    }
});
