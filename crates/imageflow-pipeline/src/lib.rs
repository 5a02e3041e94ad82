//! Pipelines as users write them, and the checks that turn one into a plan.
//!
//! * [`model`]: the JSON shapes of the API (DESIGN section 4);
//! * [`registry`]: the components a step may name, with typed, bounded parameters;
//! * [`dag`]: validation (unknown components, bad parameters, cycles, missing
//!   dependencies) and planning into levels.
//!
//! No I/O here: everything is a function of its input, which is what lets the
//! fuzz targets under `fuzz/` drive it directly.

pub mod dag;
pub mod model;
pub mod registry;
