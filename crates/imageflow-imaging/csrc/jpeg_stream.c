/*
 * Row-band access to libjpeg-turbo's raw (YCbCr plane) decoder and encoder, for the
 * streamed resize in src/stream.rs, and to its RGB decoder a few rows at a time, for
 * the streamed letterbox in src/detect/stream.rs.
 *
 * TurboJPEG's API decodes or encodes a whole image per call, so a resize has to wait
 * for the last row before it can start. libjpeg's own API hands out one iMCU row at
 * a time; these wrappers expose exactly that, with libjpeg's longjmp error handling
 * kept inside C (no Rust frame is ever crossed by a longjmp).
 *
 * The settings are TurboJPEG 3's for tj3DecompressToYUVPlanes8 and
 * tj3CompressFromYUVPlanes8 (turbojpeg.c in libjpeg-turbo 3.1, as vendored by
 * turbojpeg-sys), so the planes and the encoded bytes are the same as the whole-image
 * path's; the Rust tests compare them byte for byte.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

/* libjpeg-turbo's jpegint.h is not installed. This is its struct jpeg_inverse_dct,
 * needed for the 4:2:0 override TurboJPEG applies (see ifc_decoder_start). */
struct jpeg_inverse_dct {
  void (*start_pass)(j_decompress_ptr cinfo);
  void *inverse_DCT[MAX_COMPONENTS];
};

/* jpegint.h's names for the scaled block sizes, which depend on the emulated API. */
#if JPEG_LIB_VERSION >= 70
#define _DCT_scaled_size DCT_h_scaled_size
#define _min_DCT_scaled_size min_DCT_h_scaled_size
#else
#define _DCT_scaled_size DCT_scaled_size
#define _min_DCT_scaled_size min_DCT_scaled_size
#endif

#define IFC_MESSAGE_LEN JMSG_LENGTH_MAX

struct ifc_error {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  /* The fatal error, or the first warning (libjpeg reports only the first). */
  char message[IFC_MESSAGE_LEN];
  int warnings;
};

static void ifc_error_exit(j_common_ptr cinfo)
{
  struct ifc_error *err = (struct ifc_error *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

static void ifc_output_message(j_common_ptr cinfo)
{
  struct ifc_error *err = (struct ifc_error *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, err->message);
}

static void ifc_emit_message(j_common_ptr cinfo, int msg_level)
{
  struct ifc_error *err = (struct ifc_error *)cinfo->err;
  if (msg_level < 0) {
    /* Only the first warning is formatted, as libjpeg's own emit_message does. */
    if (err->warnings == 0) ifc_output_message(cinfo);
    err->warnings++;
  }
}

static void ifc_error_init(struct ifc_error *err)
{
  jpeg_std_error(&err->pub);
  err->pub.error_exit = ifc_error_exit;
  err->pub.output_message = ifc_output_message;
  err->pub.emit_message = ifc_emit_message;
  err->message[0] = '\0';
  err->warnings = 0;
}

/* ---- decoder ---- */

typedef struct ifc_decoder {
  struct jpeg_decompress_struct cinfo;
  struct ifc_error err;
  int started;
  /* One iMCU row of each plane, as libjpeg writes it (padded to whole blocks). */
  JSAMPROW rows[3][16];
  unsigned char *band;
} ifc_decoder;

ifc_decoder *ifc_decoder_new(void)
{
  /* volatile: read again after a longjmp. */
  ifc_decoder *volatile d = calloc(1, sizeof(ifc_decoder));
  if (d == NULL) return NULL;
  ifc_error_init(&d->err);
  d->cinfo.err = &d->err.pub;
  if (setjmp(d->err.jump)) {
    free(d);
    return NULL;
  }
  jpeg_create_decompress(&d->cinfo);
  return d;
}

void ifc_decoder_free(ifc_decoder *d)
{
  if (d == NULL) return;
  jpeg_destroy_decompress(&d->cinfo);
  free(d->band);
  free(d);
}

const char *ifc_decoder_message(const ifc_decoder *d) { return d->err.message; }
int ifc_decoder_warnings(const ifc_decoder *d) { return d->err.warnings; }

static void ifc_decoder_reset(ifc_decoder *d)
{
  free(d->band);
  d->band = NULL;
  d->started = 0;
  d->err.message[0] = '\0';
  d->err.warnings = 0;
}

/*
 * Reads the header of `data` into a fresh decompressor. Returns 1 when it is a
 * single-scan 8-bit YCbCr JPEG, else 0 (the decompressor aborted). Call under the
 * caller's setjmp: libjpeg's errors longjmp to it.
 *
 * Fresh, because libjpeg keeps the Huffman and quantization tables of earlier images
 * (for abbreviated streams), so a JPEG that lacks one would decode with whatever the
 * thread decoded before: the result would depend on another request's image. Creating
 * one costs a few small allocations.
 */
static int ifc_decoder_read_ycc_header(ifc_decoder *d, const unsigned char *data, size_t len)
{
  jpeg_destroy_decompress(&d->cinfo);
  jpeg_create_decompress(&d->cinfo);
  jpeg_mem_src(&d->cinfo, data, (unsigned long)len);
  jpeg_read_header(&d->cinfo, TRUE);
  if (d->cinfo.num_components != 3 || d->cinfo.jpeg_color_space != JCS_YCbCr ||
      d->cinfo.data_precision != 8 || d->cinfo.progressive_mode ||
      jpeg_has_multiple_scans(&d->cinfo)) {
    jpeg_abort_decompress(&d->cinfo);
    return 0;
  }
  return 1;
}

/*
 * Reads the header of `data` and starts decoding it to planes at scale_num/8.
 * Returns 0 when started, 1 when this JPEG is not a baseline 8-bit 4:2:0 YCbCr image
 * (the caller takes the whole-image path), -1 on an error (ifc_decoder_message).
 * out[0..2]: luma width and height at the scale; out[2]: luma rows per band.
 * out[3], out[4]: luma and chroma row widths in a band (whole blocks).
 */
int ifc_decoder_start(ifc_decoder *d, const unsigned char *data, size_t len,
                      int scale_num, unsigned int out[5])
{
  int i, dctsize;
  ifc_decoder_reset(d);
  if (setjmp(d->err.jump)) {
    /* Safe after a failed create too: libjpeg checks for a missing memory manager. */
    jpeg_abort_decompress(&d->cinfo);
    return -1;
  }
  if (!ifc_decoder_read_ycc_header(d, data, len)) return 1;
  if (d->cinfo.comp_info[0].h_samp_factor != 2 || d->cinfo.comp_info[0].v_samp_factor != 2) {
    jpeg_abort_decompress(&d->cinfo);
    return 1;
  }
  for (i = 1; i < 3; i++) {
    if (d->cinfo.comp_info[i].h_samp_factor != 1 ||
        d->cinfo.comp_info[i].v_samp_factor != 1) {
      jpeg_abort_decompress(&d->cinfo);
      return 1;
    }
  }
  d->cinfo.scale_num = (unsigned int)scale_num;
  d->cinfo.scale_denom = 8;
  d->cinfo.do_fancy_upsampling = TRUE;
  d->cinfo.dct_method = JDCT_ISLOW;
  d->cinfo.raw_data_out = TRUE;
  jpeg_start_decompress(&d->cinfo);
  dctsize = DCTSIZE * scale_num / 8;
  for (i = 0; i < 3; i++) {
    jpeg_component_info *comp = &d->cinfo.comp_info[i];
    /* TurboJPEG's override: without it, libjpeg folds the chroma upsampling into a
     * larger IDCT and hands out chroma at luma size, not the stored 4:2:0 planes. */
    comp->_DCT_scaled_size = dctsize;
    comp->MCU_sample_width = 16 * scale_num / 8 * comp->v_samp_factor / d->cinfo.max_v_samp_factor;
    d->cinfo.idct->inverse_DCT[i] = d->cinfo.idct->inverse_DCT[0];
  }
  {
    unsigned int luma_w = d->cinfo.comp_info[0].width_in_blocks * dctsize;
    unsigned int chroma_w = d->cinfo.comp_info[1].width_in_blocks * dctsize;
    unsigned int luma_rows = 2 * dctsize;
    unsigned char *p;
    int r;
    d->band = malloc((size_t)luma_w * luma_rows + 2 * (size_t)chroma_w * dctsize);
    if (d->band == NULL) {
      strcpy(d->err.message, "out of memory for a decoding band");
      jpeg_abort_decompress(&d->cinfo);
      return -1;
    }
    p = d->band;
    for (r = 0; r < (int)luma_rows; r++, p += luma_w) d->rows[0][r] = p;
    for (i = 1; i < 3; i++)
      for (r = 0; r < dctsize; r++, p += chroma_w) d->rows[i][r] = p;
    out[0] = d->cinfo.output_width;
    out[1] = d->cinfo.output_height;
    out[2] = luma_rows;
    out[3] = luma_w;
    out[4] = chroma_w;
  }
  d->started = 1;
  return 0;
}

/*
 * Decodes the next band. Returns 0 and points planes[0..3] at its rows (luma rows of
 * out[3] bytes, chroma of out[4], valid until the next call), or -1 on an error.
 * After the last band, ifc_decoder_finish.
 */
int ifc_decoder_read(ifc_decoder *d, const unsigned char *planes[3])
{
  JSAMPARRAY bands[3];
  if (!d->started) {
    strcpy(d->err.message, "decoder not started");
    return -1;
  }
  if (setjmp(d->err.jump)) {
    jpeg_abort_decompress(&d->cinfo);
    d->started = 0;
    return -1;
  }
  bands[0] = d->rows[0];
  bands[1] = d->rows[1];
  bands[2] = d->rows[2];
  jpeg_read_raw_data(&d->cinfo, bands, d->cinfo.max_v_samp_factor * d->cinfo._min_DCT_scaled_size);
  planes[0] = d->band;
  planes[1] = d->rows[1][0];
  planes[2] = d->rows[2][0];
  return 0;
}

/*
 * Reads the header of `data` and starts decoding it to interleaved RGB at
 * scale_num/8, with TurboJPEG 3's settings for tj3Decompress8 to TJPF_RGB (for the
 * streamed letterbox in src/detect/stream.rs). Returns 0 when started, 1 when this
 * JPEG is not a single-scan 8-bit YCbCr image (the caller takes the whole-image path),
 * -1 on an error. out[0], out[1]: width and height at the scale.
 */
int ifc_decoder_start_rgb(ifc_decoder *d, const unsigned char *data, size_t len,
                          int scale_num, unsigned int out[2])
{
  ifc_decoder_reset(d);
  if (setjmp(d->err.jump)) {
    /* Safe after a failed create too: libjpeg checks for a missing memory manager. */
    jpeg_abort_decompress(&d->cinfo);
    return -1;
  }
  if (!ifc_decoder_read_ycc_header(d, data, len)) return 1;
  d->cinfo.out_color_space = JCS_EXT_RGB;
  d->cinfo.do_fancy_upsampling = TRUE;
  d->cinfo.dct_method = JDCT_ISLOW;
  d->cinfo.scale_num = (unsigned int)scale_num;
  d->cinfo.scale_denom = 8;
  jpeg_start_decompress(&d->cinfo);
  out[0] = d->cinfo.output_width;
  out[1] = d->cinfo.output_height;
  d->started = 1;
  return 0;
}

/*
 * Decodes up to max_rows RGB rows into `rows` (rows of `stride` bytes, at least
 * 3 * width). Returns how many it decoded (0 after the last row), or -1 on an error.
 * After the last row, ifc_decoder_finish.
 */
int ifc_decoder_read_rgb(ifc_decoder *d, unsigned char *rows, size_t stride,
                         unsigned int max_rows)
{
  /* volatile for -Wclobbered: it changes between setjmp and a possible longjmp
   * (though it is not read after one). */
  volatile unsigned int done = 0;
  JSAMPROW pointers[16];
  if (!d->started) {
    strcpy(d->err.message, "decoder not started");
    return -1;
  }
  if (setjmp(d->err.jump)) {
    jpeg_abort_decompress(&d->cinfo);
    d->started = 0;
    return -1;
  }
  while (done < max_rows && d->cinfo.output_scanline < d->cinfo.output_height) {
    unsigned int i, want = max_rows - done;
    if (want > 16) want = 16;
    for (i = 0; i < want; i++) pointers[i] = rows + (size_t)(done + i) * stride;
    done += jpeg_read_scanlines(&d->cinfo, pointers, want);
  }
  return (int)done;
}

/* Ends the decode (reads to the end of the stream). 0, or -1 on an error. */
int ifc_decoder_finish(ifc_decoder *d)
{
  if (setjmp(d->err.jump)) {
    jpeg_abort_decompress(&d->cinfo);
    d->started = 0;
    return -1;
  }
  jpeg_finish_decompress(&d->cinfo);
  d->started = 0;
  return 0;
}

/* ---- encoder ---- */

/* The encoder writes into a buffer it keeps between images (its capacity reused, up
 * to IFC_KEPT_OUTPUT), not jpeg_mem_dest's, whose pointer is only valid after a
 * successful finish. */
#define IFC_FIRST_OUTPUT (64 * 1024)
#define IFC_KEPT_OUTPUT (4 * 1024 * 1024)
struct ifc_dest {
  struct jpeg_destination_mgr pub;
  unsigned char *buf;
  size_t cap;
  size_t len;
};

typedef struct ifc_encoder {
  struct jpeg_compress_struct cinfo;
  struct ifc_error err;
  struct ifc_dest dest;
  int started;
} ifc_encoder;

static void ifc_dest_init(j_compress_ptr cinfo)
{
  struct ifc_dest *dest = (struct ifc_dest *)cinfo->dest;
  dest->len = 0;
  dest->pub.next_output_byte = dest->buf;
  dest->pub.free_in_buffer = dest->cap;
}

static boolean ifc_dest_grow(j_compress_ptr cinfo)
{
  struct ifc_dest *dest = (struct ifc_dest *)cinfo->dest;
  /* Called when the buffer is full: everything in it is written. */
  size_t used = dest->cap;
  size_t cap = dest->cap * 2;
  unsigned char *buf = realloc(dest->buf, cap);
  if (buf == NULL) ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 10);
  dest->buf = buf;
  dest->cap = cap;
  dest->pub.next_output_byte = buf + used;
  dest->pub.free_in_buffer = cap - used;
  return TRUE;
}

static void ifc_dest_term(j_compress_ptr cinfo)
{
  struct ifc_dest *dest = (struct ifc_dest *)cinfo->dest;
  dest->len = dest->cap - dest->pub.free_in_buffer;
}

ifc_encoder *ifc_encoder_new(void)
{
  /* volatile: read again after a longjmp. */
  ifc_encoder *volatile e = calloc(1, sizeof(ifc_encoder));
  if (e == NULL) return NULL;
  e->dest.cap = IFC_FIRST_OUTPUT;
  e->dest.buf = malloc(e->dest.cap);
  if (e->dest.buf == NULL) {
    free(e);
    return NULL;
  }
  e->dest.pub.init_destination = ifc_dest_init;
  e->dest.pub.empty_output_buffer = ifc_dest_grow;
  e->dest.pub.term_destination = ifc_dest_term;
  ifc_error_init(&e->err);
  e->cinfo.err = &e->err.pub;
  if (setjmp(e->err.jump)) {
    free(e->dest.buf);
    free(e);
    return NULL;
  }
  jpeg_create_compress(&e->cinfo);
  e->cinfo.dest = &e->dest.pub;
  return e;
}

void ifc_encoder_free(ifc_encoder *e)
{
  if (e == NULL) return;
  jpeg_destroy_compress(&e->cinfo);
  free(e->dest.buf);
  free(e);
}

const char *ifc_encoder_message(const ifc_encoder *e) { return e->err.message; }

/*
 * Starts a baseline 4:2:0 JPEG of width x height at `quality`, fed by bands of 16 luma
 * and 8 chroma rows. 0, or -1 on an error. out[0], out[1]: the luma and chroma row
 * widths a band must have (whole blocks; pad by repeating the last sample).
 */
int ifc_encoder_start(ifc_encoder *e, unsigned int width, unsigned int height, int quality,
                      unsigned int out[2])
{
  e->err.message[0] = '\0';
  e->err.warnings = 0;
  e->started = 0;
  if (e->dest.cap > IFC_KEPT_OUTPUT) {
    /* One huge image must not pin its output's size on this thread for good. */
    unsigned char *small = malloc(IFC_FIRST_OUTPUT);
    if (small != NULL) {
      free(e->dest.buf);
      e->dest.buf = small;
      e->dest.cap = IFC_FIRST_OUTPUT;
    }
  }
  if (setjmp(e->err.jump)) {
    jpeg_abort_compress(&e->cinfo);
    return -1;
  }
  e->cinfo.image_width = width;
  e->cinfo.image_height = height;
  e->cinfo.data_precision = 8;
  /* tj3CompressFromYUVPlanes8's setCompDefaults, for TJPF_RGB in and 4:2:0 out. */
  e->cinfo.in_color_space = JCS_EXT_RGB;
  e->cinfo.input_components = 3;
  jpeg_set_defaults(&e->cinfo);
  e->cinfo.restart_interval = 0;
  e->cinfo.restart_in_rows = 0;
  e->cinfo.X_density = 1;
  e->cinfo.Y_density = 1;
  e->cinfo.density_unit = 0;
  jpeg_set_quality(&e->cinfo, quality, TRUE);
  e->cinfo.dct_method = JDCT_ISLOW;
  jpeg_set_colorspace(&e->cinfo, JCS_YCbCr);
  e->cinfo.optimize_coding = FALSE;
  e->cinfo.arith_code = FALSE;
  e->cinfo.comp_info[0].h_samp_factor = 2;
  e->cinfo.comp_info[0].v_samp_factor = 2;
  e->cinfo.comp_info[1].h_samp_factor = 1;
  e->cinfo.comp_info[1].v_samp_factor = 1;
  e->cinfo.comp_info[2].h_samp_factor = 1;
  e->cinfo.comp_info[2].v_samp_factor = 1;
  e->cinfo.raw_data_in = TRUE;
  jpeg_start_compress(&e->cinfo, TRUE);
  out[0] = e->cinfo.comp_info[0].width_in_blocks * DCTSIZE;
  out[1] = e->cinfo.comp_info[1].width_in_blocks * DCTSIZE;
  e->started = 1;
  return 0;
}

/* Encodes one band: 16 luma rows of out[0] bytes, 8 chroma rows of out[1] each, packed. */
int ifc_encoder_write(ifc_encoder *e, unsigned char *y, unsigned char *cb, unsigned char *cr)
{
  JSAMPROW rows[3][16];
  JSAMPARRAY bands[3];
  unsigned int luma_w, chroma_w;
  int r;
  if (!e->started) {
    strcpy(e->err.message, "encoder not started");
    return -1;
  }
  if (setjmp(e->err.jump)) {
    jpeg_abort_compress(&e->cinfo);
    e->started = 0;
    return -1;
  }
  luma_w = e->cinfo.comp_info[0].width_in_blocks * DCTSIZE;
  chroma_w = e->cinfo.comp_info[1].width_in_blocks * DCTSIZE;
  for (r = 0; r < 16; r++) rows[0][r] = y + (size_t)r * luma_w;
  for (r = 0; r < 8; r++) {
    rows[1][r] = cb + (size_t)r * chroma_w;
    rows[2][r] = cr + (size_t)r * chroma_w;
  }
  bands[0] = rows[0];
  bands[1] = rows[1];
  bands[2] = rows[2];
  jpeg_write_raw_data(&e->cinfo, bands, 16);
  return 0;
}

/* Ends the image. 0 with *data and *len the JPEG (owned by the encoder until the next
 * start), or -1 on an error or a warning (TurboJPEG fails on encoder warnings too). */
int ifc_encoder_finish(ifc_encoder *e, const unsigned char **data, size_t *len)
{
  if (!e->started) {
    strcpy(e->err.message, "encoder not started");
    return -1;
  }
  if (setjmp(e->err.jump)) {
    jpeg_abort_compress(&e->cinfo);
    e->started = 0;
    return -1;
  }
  jpeg_finish_compress(&e->cinfo);
  e->started = 0;
  if (e->err.warnings > 0) return -1;
  *data = e->dest.buf;
  *len = e->dest.len;
  return 0;
}
