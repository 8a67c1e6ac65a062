//! rankcollapse: deep stacks of random attention layers and how fast their tokens collapse to
//! rank one, measured in a tracked representation that stays exact far below float epsilon.
//! See ARCHITECTURE.md for the data flow.

pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod linalg;
pub mod metrics;
pub mod model;
pub mod output;
pub mod plot;
pub mod reproduce;
pub mod rng;
pub mod signals;
pub mod sweep;
