//! The integration test binary: arbitrary-precision reference, precision, known answers, CLI.

mod cli;
mod cpu_perf;
mod gpu;
mod jobs;
mod known_answers;
mod plot;
mod precision;
mod properties;
mod reference;
mod reliability;
mod reproduce;
mod shards;
mod sweep;
mod validation;
mod workers;
