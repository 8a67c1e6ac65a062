//! `rankcollapse reproduce`: runs the presets of the papers asked for and prints where their
//! report is; the presets themselves live in `crate::reproduce`.

use crate::cli::ReproduceArgs;
use crate::reproduce as rp;

/// `rankcollapse reproduce`: the presets of one paper or all.
pub fn reproduce(args: &ReproduceArgs) -> anyhow::Result<i32> {
    let papers = rp::parse_papers(&args.paper)?;
    let opts = rp::Options { quick: args.quick, seed: args.seed, threads: args.threads, engine: args.engine };
    rp::reproduce(&papers, &args.out, &opts)?;
    println!("{}", args.out.join("README.md").display());
    Ok(0)
}
