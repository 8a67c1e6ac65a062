//! Counter-based random numbers: Philox4x32-10 and the documented derivation of every draw.
//!
//! Every random number of a run is a pure function of (seed, stream, sequence, element), so the
//! CPU and GPU engines see the same inputs and weights and results do not depend on chunking,
//! threading or sharding. The derivation (kept deliberately simple so WGSL can reproduce it):
//!
//! * key = (seed low 32 bits, seed high 32 bits);
//! * gaussian number `k` of a block is word `k % 4` of
//!   `philox(key, [k/4 low 32, k/4 high 32, sequence, stream])` turned into four normals by
//!   Box-Muller on the pairs (w0, w1) and (w2, w3), each word mapped to the open interval (0, 1)
//!   as `(w + 0.5) / 2^32`;
//! * `stream` packs what the numbers are for: `purpose << 28 | layer << 8 | head`
//!   (layer < 2^20, head < 2^8), see [`Stream`].

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with `rounds` rounds (10 is the standard, known-answer-tested choice).
pub fn philox4x32(counter: [u32; 4], key: [u32; 2], rounds: u32) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..rounds {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Philox4x32-10.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox4x32(counter, key, 10)
}

/// What a block of random numbers is used for; the code goes into the top four bits of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Input = 0,
    InputShared = 1,
    Query = 2,
    Key = 3,
    Value = 4,
    Output = 5,
    MlpIn = 6,
    MlpOut = 7,
    Markov = 8,
}

/// The stream id of a block: `purpose << 28 | layer << 8 | head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream(pub u32);

impl Stream {
    pub fn new(purpose: Purpose, layer: usize, head: usize) -> Self {
        debug_assert!(layer < (1 << 20) && head < (1 << 8));
        Stream(((purpose as u32) << 28) | (((layer as u32) & 0xF_FFFF) << 8) | (head as u32 & 0xFF))
    }
}

/// Sequence index used for draws shared by all sequences (one network for the whole batch).
pub const SHARED_SEQUENCE: u32 = u32::MAX;

/// A block of standard normals addressed by (seed, stream, sequence); element `k` is computed on
/// demand, so any slice of the block can be generated independently.
#[derive(Clone, Copy, Debug)]
pub struct GaussianBlock {
    key: [u32; 2],
    stream: u32,
    sequence: u32,
}

/// Maps a 32-bit word to the open interval (0, 1).
pub fn unit_open(w: u32) -> f64 {
    (f64::from(w) + 0.5) * (1.0 / 4_294_967_296.0)
}

impl GaussianBlock {
    pub fn new(seed: u64, stream: Stream, sequence: u32) -> Self {
        GaussianBlock { key: [seed as u32, (seed >> 32) as u32], stream: stream.0, sequence }
    }

    /// The four normals of counter block `q` (elements 4q .. 4q+3).
    pub fn quad(&self, q: u64) -> [f64; 4] {
        let w = philox4x32_10([q as u32, (q >> 32) as u32, self.sequence, self.stream], self.key);
        let (a0, a1) = box_muller(unit_open(w[0]), unit_open(w[1]));
        let (b0, b1) = box_muller(unit_open(w[2]), unit_open(w[3]));
        [a0, a1, b0, b1]
    }

    /// Standard normal number `k` of the block.
    pub fn normal(&self, k: u64) -> f64 {
        self.quad(k / 4)[(k % 4) as usize]
    }

    /// The first `len` normals of the block, in order.
    pub fn normals(&self, len: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(len + 3);
        for q in 0..len.div_ceil(4) as u64 {
            out.extend_from_slice(&self.quad(q));
        }
        out.truncate(len);
        out
    }
}

fn box_muller(u0: f64, u1: f64) -> (f64, f64) {
    let r = (-2.0 * u0.ln()).sqrt();
    let theta = std::f64::consts::TAU * u1;
    (r * theta.cos(), r * theta.sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123's kat_vectors file (counter, key -> output).
    #[test]
    fn philox_matches_random123_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            ([0; 4], [0; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
            ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(philox4x32_10(ctr, key), want, "counter {ctr:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn normals_have_unit_moments_and_are_addressable() {
        let block = GaussianBlock::new(12345, Stream::new(Purpose::Input, 3, 1), 7);
        let xs = block.normals(200_001);
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "seed 12345: mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "seed 12345: var {var}");
        for k in [0u64, 1, 5, 99_999, 200_000] {
            assert_eq!(block.normal(k), xs[k as usize]);
        }
        let other = GaussianBlock::new(12345, Stream::new(Purpose::Input, 3, 2), 7);
        assert_ne!(other.normal(0), xs[0]);
    }
}
