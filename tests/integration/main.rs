//! The integration test binary: arbitrary-precision reference, precision, known answers, CLI.

mod cli;
mod known_answers;
mod precision;
mod reference;
mod sweep;
