//! Tests only: see `tests/`. They start the workspace's binaries
//! (`backend-api`, `resize-svc`, `filter-svc`, `ai-detect-svc`) as real
//! processes, each with its own telemetry, and check what an SRE would see.
