//! What the kernel benches share: the small configuration.

use rankcollapse::config::Config;

/// One layer of the small configuration (n = 256, d = 64, 4 heads, post-LN + skip, gelu:4) for
/// `sequences` sequences, without the attention spectrum.
pub fn small(sequences: usize) -> Config {
    Config {
        depth: 1,
        tokens: 256,
        width: 64,
        heads: 4,
        sequences,
        spectrum_every: 0,
        norm: "post-ln".parse().unwrap(),
        skip: "standard".parse().unwrap(),
        mlp: "gelu:4".parse().unwrap(),
        ..Config::default()
    }
}
