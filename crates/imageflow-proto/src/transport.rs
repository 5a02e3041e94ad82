//! HTTP/2 flow control and framing shared by every gRPC server and client here.
//!
//! HTTP/2 starts each stream and connection with a 64 KiB window and 16 KiB
//! frames: a sender may have only 64 KiB unacknowledged before it waits for the
//! receiver's WINDOW_UPDATE, and cuts everything into 16 KiB DATA frames the
//! receiver handles one by one. Images are hundreds of kilobytes (a 1080p JPEG
//! is ~330 KB, a detection tensor 4.9 MB), so with the defaults one call spends
//! several round trips asking for permission to send and tens of frames per
//! message. On the 1080p resize over loopback the two together cost about 1 ms
//! of a 7-8 ms call (`scripts/bench.sh`, bench/README.md).
//!
//! The receiver decodes as it reads, so a large window bounds how far a peer
//! may run ahead, not what is kept per call (the message size limits do that);
//! a frame is read whole before it is handed on, so the frame size is the most
//! one connection buffers for one frame.

/// Per-stream window: one call's image goes out without a stall.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;

/// Per-connection window: every call multiplexed on one connection together.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// Largest DATA frame this side accepts (the peer cuts messages into these).
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// `endpoint` with this module's windows and frame size: every gRPC client here
/// goes through this (the servers set the same on their builder).
pub fn tuned(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    endpoint
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
}
