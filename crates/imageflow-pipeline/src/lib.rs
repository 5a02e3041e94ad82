//! Pipelines as users write them, and the checks that turn one into a plan.
//!
//! * [`model`]: the JSON shapes of the REST API (`/v1`);
//! * [`registry`]: the components a step may name, with typed, bounded parameters;
//! * [`dag`]: validation (unknown components, bad parameters, cycles, missing
//!   dependencies) and planning into levels;
//! * [`wire`]: the closed sets of names (statuses, resize qualities, filter
//!   types) as enums with their one string form each.
//!
//! No I/O here: everything is a function of its input, which is what lets the
//! fuzz targets under `fuzz/` drive it directly.

// First: the other modules use its `wire_enum!`.
#[macro_use]
pub mod wire;

pub mod dag;
pub mod model;
pub mod registry;
