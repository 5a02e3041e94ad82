//! Limits and hostile input: every case is a typed error, never a panic or a big allocation.

mod common;

use common::{fixture, palette_png, png_header, push_png_chunk};
use imageflow_imaging::{
    FilterKind, FilterSpec, ImagingError, Limits, ResizeQuality, ResizeSpec, decode,
    decode_at_least, filter_encoded, probe, resize_encoded,
};
use proptest::prelude::*;

fn spec() -> ResizeSpec {
    ResizeSpec {
        width: 64,
        height: 64,
        keep_aspect: true,
        quality: ResizeQuality::Fast,
        output_format: None,
    }
}

fn all_paths(data: &[u8]) -> Vec<Result<(), ImagingError>> {
    let limits = Limits::default();
    vec![
        probe(data, &limits).map(|_| ()),
        decode(data, &limits).map(|_| ()),
        decode_at_least(data, &limits, 16, 16).map(|_| ()),
        resize_encoded(data, &limits, &spec()).map(|_| ()),
    ]
}

#[test]
fn empty_input() {
    for r in all_paths(&[]) {
        assert!(matches!(r, Err(ImagingError::Empty)), "{r:?}");
    }
}

#[test]
fn random_bytes_are_unsupported() {
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for r in all_paths(&noise) {
        let err = r.unwrap_err();
        assert!(matches!(err, ImagingError::UnsupportedFormat), "{err:?}");
        assert!(err.to_string().contains("JPEG, PNG or WEBP"));
    }
}

#[test]
fn truncated_jpeg_is_refused() {
    let data = fixture("photo-1920x1080.jpg");
    let half = &data[..data.len() / 2];
    // The header is intact, so probe succeeds...
    assert_eq!(probe(half, &Limits::default()).unwrap().width, 1920);
    // ...but decoding refuses rather than return a grey-filled picture.
    for r in all_paths(half).into_iter().skip(1) {
        let err = r.unwrap_err();
        assert!(matches!(err, ImagingError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("JPEG"), "{err}");
    }
    // Cut inside the header: also corrupt, from probe on.
    let err = probe(&data[..40], &Limits::default()).unwrap_err();
    assert!(matches!(err, ImagingError::Corrupt(_)), "{err:?}");
}

#[test]
fn a_cut_header_after_a_good_one_is_refused_not_given_its_sizes() {
    // TurboJPEG reports success for data that ends before any frame header; a reused
    // decoder instance then still held the previous image's sizes.
    let data = fixture("photo-1920x1080.jpg");
    assert_eq!(probe(&data, &Limits::default()).unwrap().width, 1920);
    let err = probe(&data[..40], &Limits::default()).unwrap_err();
    assert!(matches!(err, ImagingError::Corrupt(_)), "{err:?}");
}

/// `jpeg` without its Huffman tables (DHT segments), as Motion-JPEG frames are stored:
/// libjpeg decodes such a stream with the standard tables.
fn without_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut at = 2;
    while jpeg[at + 1] != 0xDA {
        let len = 2 + usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        if jpeg[at + 1] != 0xC4 {
            out.extend_from_slice(&jpeg[at..at + len]);
        }
        at += len;
    }
    out.extend_from_slice(&jpeg[at..]);
    out
}

#[test]
fn a_jpeg_without_tables_never_decodes_with_another_image_s() {
    // libjpeg keeps the tables of earlier images on a decompressor (for abbreviated
    // streams), so a reused one decoded such a JPEG with whatever the thread had seen.
    let limits = Limits::default();
    let png = decode(&fixture("chelsea.png"), &limits).unwrap().image;
    let standard = imageflow_imaging::encode(
        &png,
        &imageflow_imaging::EncodeOptions::new(imageflow_imaging::ImageFormat::Jpeg),
    )
    .unwrap();
    let abbreviated = without_huffman_tables(&standard);
    assert!(abbreviated.len() < standard.len());
    let expected = decode(&standard, &limits).unwrap().image;
    let letterbox = imageflow_imaging::letterbox_encoded(&standard, &limits, 64, 64).unwrap();
    let resized = resize_encoded(&standard, &limits, &spec()).unwrap().data;
    for prior in [
        "photo-1920x1080.jpg",
        "astronaut.jpg",
        "coffee.jpg",
        "rocket.jpg",
    ] {
        // Every path, each after the prior image on the same thread.
        let prior = fixture(prior);
        decode(&prior, &limits).unwrap();
        assert!(decode(&abbreviated, &limits).unwrap().image == expected);
        imageflow_imaging::letterbox_encoded(&prior, &limits, 64, 64).unwrap();
        assert!(
            imageflow_imaging::letterbox_encoded(&abbreviated, &limits, 64, 64).unwrap()
                == letterbox
        );
        resize_encoded(&prior, &limits, &spec()).unwrap();
        assert!(resize_encoded(&abbreviated, &limits, &spec()).unwrap().data == resized);
    }
}

#[test]
fn truncated_png_is_refused() {
    let data = fixture("chelsea.png");
    for cut in [data.len() / 2, 33, 20, 9] {
        let r = decode(&data[..cut], &Limits::default());
        let err = r.unwrap_err();
        assert!(
            matches!(err, ImagingError::Corrupt(_)),
            "cut {cut}: {err:?}"
        );
        assert!(err.to_string().contains("PNG"), "{err}");
    }
}

/// The fuzzer's find: a PLTE chunk that is not whole 3-byte entries passed the png
/// crate's length check (3..=768) and then panicked in its palette expansion, so a
/// 661-byte upload killed the image worker. The decoder must never see one.
#[test]
fn a_palette_of_partial_entries_is_refused() {
    for len in [4, 5, 512, 766] {
        let palette: Vec<u8> = (0..len).map(|i| i as u8).collect();
        for r in all_paths(&palette_png(&palette)) {
            let err = r.unwrap_err();
            assert!(matches!(err, ImagingError::Corrupt(_)), "{len}: {err:?}");
            assert!(
                err.to_string()
                    .contains(&format!("PNG palette (PLTE) is {len} bytes")),
                "{err}"
            );
        }
    }
    // The same image with whole entries decodes, to entry 0's colour.
    let decoded = decode(&palette_png(&[10, 20, 30, 40, 50, 60]), &Limits::default()).unwrap();
    assert_eq!((decoded.image.width(), decoded.image.height()), (8, 8));
    assert!(decoded.image.pixels().chunks(3).all(|p| p == [10, 20, 30]));
}

#[test]
fn corrupt_middle_bytes_are_refused() {
    let mut png = fixture("chelsea.png");
    let mid = png.len() / 2;
    png[mid..mid + 64].fill(0x5A);
    assert!(matches!(
        decode(&png, &Limits::default()),
        Err(ImagingError::Corrupt(_))
    ));

    let mut webp = fixture("horse-cutout.webp");
    let mid = webp.len() / 2;
    webp[mid..mid + 256].fill(0xA5);
    let r = decode(&webp, &Limits::default());
    assert!(matches!(r, Err(ImagingError::Corrupt(_))), "{r:?}");
}

#[test]
fn zero_size_png_header() {
    let mut png = png_header(0, 0);
    push_png_chunk(&mut png, b"IEND", &[]);
    for r in all_paths(&png) {
        let err = r.unwrap_err();
        assert!(matches!(err, ImagingError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("0x0"), "{err}");
    }
}

#[test]
fn decompression_bomb_is_refused_from_the_header() {
    // A valid PNG header declaring 60000x60000 (10.8 GB of RGB), followed by a tiny IDAT.
    let mut png = png_header(60000, 60000);
    push_png_chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    push_png_chunk(&mut png, b"IEND", &[]);
    for r in all_paths(&png) {
        match r {
            Err(ImagingError::TooManyPixels {
                width: 60000,
                height: 60000,
                limit,
            }) => {
                assert_eq!(limit, 16384, "the per-side limit is reported first");
            }
            other => panic!("expected TooManyPixels, got {other:?}"),
        }
    }
    // Within the side limit but over the pixel limit: 10000x10000.
    let mut png = png_header(10000, 10000);
    push_png_chunk(&mut png, b"IEND", &[]);
    let err = decode(&png, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ImagingError::TooManyPixels {
                limit: 50_000_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "image is 10000x10000 = 100000000 pixels, over the limit of 50000000"
    );
}

#[test]
fn jpeg_declaring_huge_size_is_refused_from_the_header() {
    // Patch the SOF0 frame size of a real JPEG to 60000x60000.
    let mut data = fixture("chelsea.jpg");
    let sof = data.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    data[sof + 5..sof + 7].copy_from_slice(&60000u16.to_be_bytes());
    data[sof + 7..sof + 9].copy_from_slice(&60000u16.to_be_bytes());
    let err = decode(&data, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ImagingError::TooManyPixels {
                width: 60000,
                height: 60000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn input_over_byte_limit() {
    let data = fixture("chelsea.png");
    let limits = Limits {
        max_input_bytes: 1000,
        ..Limits::default()
    };
    let err = decode(&data, &limits).unwrap_err();
    assert!(
        matches!(err, ImagingError::InputTooLarge { size, limit: 1000 } if size == data.len()),
        "{err:?}"
    );
    assert!(err.to_string().contains("over the limit of 1000 bytes"));
}

#[test]
fn small_pixel_limit_applies_to_real_photos() {
    let limits = Limits {
        max_pixels: 100_000,
        ..Limits::default()
    };
    let err = probe(&fixture("chelsea.png"), &limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image is 451x300 = 135300 pixels, over the limit of 100000"
    );
}

#[test]
fn huge_requested_output_is_refused() {
    let data = fixture("chelsea.jpg");
    for keep_aspect in [true, false] {
        let s = ResizeSpec {
            width: 100_000,
            height: 100_000,
            keep_aspect,
            ..spec()
        };
        let err = resize_encoded(&data, &Limits::default(), &s).unwrap_err();
        assert!(matches!(err, ImagingError::TooManyPixels { .. }), "{err:?}");
    }
    // Within the side limit but over the pixel count.
    let s = ResizeSpec {
        width: 16000,
        height: 16000,
        keep_aspect: false,
        ..spec()
    };
    let err = resize_encoded(&data, &Limits::default(), &s).unwrap_err();
    assert!(
        matches!(
            err,
            ImagingError::TooManyPixels {
                limit: 50_000_000,
                ..
            }
        ),
        "{err:?}"
    );
    let s = ResizeSpec {
        width: 0,
        height: 0,
        keep_aspect: true,
        ..spec()
    };
    assert!(matches!(
        resize_encoded(&data, &Limits::default(), &s),
        Err(ImagingError::InvalidParameter(_))
    ));
}

#[test]
fn filter_encoded_validates_before_decoding() {
    // Garbage input with a bad intensity: the intensity is reported, not the format.
    let spec = FilterSpec {
        kind: FilterKind::Gaussian,
        intensity: 1000.0,
    };
    let err = filter_encoded(b"not an image", &Limits::default(), &spec, None, None).unwrap_err();
    assert!(matches!(err, ImagingError::InvalidParameter(_)), "{err:?}");
    assert!(err.to_string().contains("gaussian"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), magic in 0usize..4) {
        let mut data = data;
        let prefix: &[u8] = match magic {
            0 => &[0xFF, 0xD8, 0xFF],
            1 => b"\x89PNG\r\n\x1a\n",
            2 => b"RIFF\x00\x10\x00\x00WEBP",
            _ => &[],
        };
        data.splice(0..0, prefix.iter().copied());
        for r in all_paths(&data) {
            let _ = r;
        }
    }

    #[test]
    fn mutated_real_images_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let name = ["chelsea.jpg", "chelsea.png", "horse-cutout.webp", "chelsea-exif-orientation-6.jpg"][which];
        let mut data = fixture(name);
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        if truncate {
            data.truncate(cut.index(data.len()) + 1);
        }
        for r in all_paths(&data) {
            if let Err(e) = r {
                // Every error renders to a message a person can read.
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}
