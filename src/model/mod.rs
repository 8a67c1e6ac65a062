//! The model: random weights and inputs drawn from the counter-based generator, and one layer as
//! a composition of exact maps of the tracked state (attention, normalisation, skip, MLP).

pub mod attention;
pub mod mlp;
pub mod norm;
pub mod state;

use crate::config::{Attention, Config, Input, Norm, Weights};
use crate::linalg::orthonormalize_rows;
use crate::rng::{GaussianBlock, Purpose, Stream, SHARED_SEQUENCE};
use ndarray::Array2;
pub use state::Tracked;
use std::borrow::Cow;

/// The float type of an engine's state: f32 or f64.
pub trait Real:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::iter::Sum
    + num_traits::FromPrimitive
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + std::fmt::Debug
    + std::fmt::Display
    + Send
    + Sync
    + 'static
{
    /// Machine epsilon.
    const EPS: f64;
    /// The largest finite value.
    const MAX_FINITE: f64;
    /// Converts from f64 (rounding).
    fn c(x: f64) -> Self;
    fn f(self) -> f64;
}

impl Real for f32 {
    const EPS: f64 = f32::EPSILON as f64;
    const MAX_FINITE: f64 = f32::MAX as f64;
    fn c(x: f64) -> Self {
        x as f32
    }
    fn f(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    const EPS: f64 = f64::EPSILON;
    const MAX_FINITE: f64 = f64::MAX;
    fn c(x: f64) -> Self {
        x
    }
    fn f(self) -> f64 {
        self
    }
}

/// The random weights of one attention head.
#[derive(Clone, Debug)]
pub struct HeadWeights<T> {
    pub query: Array2<T>,
    pub key: Array2<T>,
    pub value: Array2<T>,
    /// Markov logits (n x n), only for `--attention markov`.
    pub markov_logits: Option<Array2<T>>,
}

/// The random weights of one layer.
#[derive(Clone, Debug)]
pub struct LayerWeights<T> {
    pub heads: Vec<HeadWeights<T>>,
    pub out_proj: Option<Array2<T>>,
    pub mlp: Option<(Array2<T>, Array2<T>)>,
}

impl<T: Real> LayerWeights<T> {
    /// The first weight matrix with an entry that is not finite in `T` (a scale beyond f32's
    /// range, say), with the largest magnitude it was meant to have: such a layer cannot be run.
    pub fn not_finite(&self) -> Option<String> {
        let mut named: Vec<(&str, &Array2<T>)> = Vec::new();
        for h in &self.heads {
            named.extend([("query", &h.query), ("key", &h.key), ("value", &h.value)]);
            named.extend(h.markov_logits.as_ref().map(|m| ("markov logits", m)));
        }
        named.extend(self.out_proj.as_ref().map(|m| ("output projection", m)));
        if let Some((a, b)) = &self.mlp {
            named.extend([("mlp first", a), ("mlp second", b)]);
        }
        named.into_iter().find(|(_, m)| m.iter().any(|x| !x.f().is_finite())).map(|(name, m)| {
            let bad = m.iter().filter(|x| !x.f().is_finite()).count();
            format!(
                "{bad} of {} entries of the {name} weights are not finite in {} (largest finite magnitude {:e}): \
                 reduce the weight scale or use --precision f64 on the CPU engine",
                m.len(),
                std::any::type_name::<T>(),
                T::MAX_FINITE
            )
        })
    }
}

/// A `rows x cols` matrix of the given family, in f64, drawn from block (seed, stream, sequence).
/// Gaussian element (i, j) is normal number i * cols + j of the block.
pub fn weight_matrix(w: Weights, rows: usize, cols: usize, block: GaussianBlock) -> Array2<f64> {
    match w {
        Weights::Gaussian(std) => {
            let std = std.unwrap_or(1.0 / (rows as f64).sqrt());
            Array2::from_shape_vec((rows, cols), block.normals(rows * cols)).unwrap() * std
        }
        Weights::Orthogonal => {
            let mut g = block.normals(rows * cols);
            orthonormalize_rows(&mut g, rows, cols);
            Array2::from_shape_vec((rows, cols), g).unwrap()
        }
        Weights::Identity => Array2::eye(rows),
        Weights::ScaledIdentity(c) => Array2::eye(rows) * c,
        Weights::None => Array2::zeros((0, 0)),
    }
}

fn cast<T: Real>(m: Array2<f64>) -> Array2<T> {
    m.mapv(T::c)
}

/// The sequence index under which the weights of sequence `seq` are drawn.
pub fn weight_sequence(cfg: &Config, seq: usize) -> u32 {
    if cfg.per_sequence_weights {
        seq as u32
    } else {
        SHARED_SEQUENCE
    }
}

/// The weights of layer `layer` (0-based) for sequence `seq`, in f64.
pub fn layer_weights_f64(cfg: &Config, layer: usize, seq: usize) -> LayerWeights<f64> {
    let li = if cfg.share_layers { 0 } else { layer };
    let sq = weight_sequence(cfg, seq);
    let block = |p: Purpose, h: usize| GaussianBlock::new(cfg.seed, Stream::new(p, li, h), sq);
    let (d, r, dv, n) = (cfg.width, cfg.head_rank(), cfg.value_dim(), cfg.tokens);
    let heads = (0..cfg.heads)
        .map(|h| {
            let softmax = cfg.attention == Attention::Softmax;
            HeadWeights {
                query: if softmax {
                    weight_matrix(cfg.qk, d, r, block(Purpose::Query, h))
                } else {
                    Array2::zeros((d, 0))
                },
                key: if softmax {
                    weight_matrix(cfg.qk, d, r, block(Purpose::Key, h))
                } else {
                    Array2::zeros((d, 0))
                },
                value: weight_matrix(cfg.value, d, dv, block(Purpose::Value, h)),
                markov_logits: (cfg.attention == Attention::Markov).then(|| {
                    let z = block(Purpose::Markov, h).normals(n * n);
                    let (mu, sd) = (-std::f64::consts::LN_2 / 2.0, std::f64::consts::LN_2.sqrt());
                    Array2::from_shape_vec((n, n), z).unwrap().mapv(|x| mu + sd * x)
                }),
            }
        })
        .collect();
    let out_proj = (cfg.out_proj != Weights::None)
        .then(|| weight_matrix(cfg.out_proj, cfg.heads * dv, d, block(Purpose::Output, 0)));
    let hidden = cfg.mlp_hidden();
    let mlp = (hidden > 0).then(|| {
        (
            weight_matrix(cfg.mlp_weights, d, hidden, block(Purpose::MlpIn, 0)),
            weight_matrix(cfg.mlp_weights, hidden, d, block(Purpose::MlpOut, 0)),
        )
    });
    LayerWeights { heads, out_proj, mlp }
}

/// The weights of a layer in the engine's float type.
pub fn layer_weights<T: Real>(cfg: &Config, layer: usize, seq: usize) -> LayerWeights<T> {
    let w = layer_weights_f64(cfg, layer, seq);
    LayerWeights {
        heads: w
            .heads
            .into_iter()
            .map(|h| HeadWeights {
                query: cast(h.query),
                key: cast(h.key),
                value: cast(h.value),
                markov_logits: h.markov_logits.map(cast),
            })
            .collect(),
        out_proj: w.out_proj.map(cast),
        mlp: w.mlp.map(|(a, b)| (cast(a), cast(b))),
    }
}

/// The input tokens of sequence `seq` (n x d), in f64.
pub fn input_tokens(cfg: &Config, seq: usize) -> Array2<f64> {
    let (n, d) = (cfg.tokens, cfg.width);
    let block = |p: Purpose| GaussianBlock::new(cfg.seed, Stream::new(p, 0, 0), seq as u32);
    let g = block(Purpose::Input).normals(n * d);
    let mut x = Array2::from_shape_vec((n, d), g).unwrap();
    match cfg.input {
        Input::Gaussian => {}
        Input::Sphere => {
            for mut row in x.rows_mut() {
                let norm = row.dot(&row).sqrt();
                row /= norm;
            }
        }
        Input::Orthonormal => {
            let mut flat = x.into_raw_vec_and_offset().0;
            orthonormalize_rows(&mut flat, n, d);
            x = Array2::from_shape_vec((n, d), flat).unwrap();
        }
        Input::Shared(rho) => {
            let v = ndarray::Array1::from(block(Purpose::InputShared).normals(d));
            x *= (1.0 - rho).sqrt();
            x += &(v * rho.sqrt()).insert_axis(ndarray::Axis(0));
        }
    }
    x
}

/// Attention statistics of one layer, averaged over heads.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionStats {
    /// Mean row entropy of A (nats).
    pub entropy: f64,
    /// sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n), when the spectrum was computed.
    pub spectrum: Option<[f64; 3]>,
}

/// What a numerical fault is named by, on both engines: the layer part that produced an invalid
/// state, the layer's weights, or the metrics kernel (the GPU's loop-cut canary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerPart {
    Weights,
    Attention,
    Norm,
    Mlp,
    Skip,
    Metrics,
}

impl LayerPart {
    /// The name in fault messages and the manifest's `faults`.
    pub fn name(self) -> &'static str {
        match self {
            LayerPart::Weights => "weights",
            LayerPart::Attention => "attention",
            LayerPart::Norm => "norm",
            LayerPart::Mlp => "mlp",
            LayerPart::Skip => "skip",
            LayerPart::Metrics => "metrics",
        }
    }
}

impl std::fmt::Display for LayerPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A value that a layer part produced and the tracked representation cannot hold (an overflow
/// of the float type, a NaN): the part that produced it first, and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub part: LayerPart,
    pub what: String,
}

/// One layer applied to the tracked state, as the configuration describes it; returns the new
/// state and the statistics of its attention matrices.
pub fn apply_layer<T: Real>(
    cfg: &Config,
    w: &LayerWeights<T>,
    x: &Tracked<T>,
    spectrum: bool,
) -> (Tracked<T>, AttentionStats) {
    let (y, stats, _) = apply_layer_checked(cfg, w, x, spectrum);
    (y, stats)
}

/// [`apply_layer`], with the state checked after every part: the first part whose output is not
/// a valid tracked state is returned as a [`Fault`] (the state is returned as it came out).
pub fn apply_layer_checked<T: Real>(
    cfg: &Config,
    w: &LayerWeights<T>,
    x: &Tracked<T>,
    spectrum: bool,
) -> (Tracked<T>, AttentionStats, Option<Fault>) {
    let mut fault = None;
    let (a, b) = cfg.skip.coefficients();
    let plain = (a, b) == (0.0, 1.0);
    let has_mlp = w.mlp.is_some();
    let attend = |x: &Tracked<T>| attention::attention_layer(cfg, w, x, spectrum);
    let (pre, post) = match cfg.norm {
        Norm::Pre(_) => (true, false),
        Norm::Post(_) => (false, true),
        Norm::None => (false, false),
    };
    let mut stats = AttentionStats::default();
    if let Some(what) = w.not_finite() {
        return (x.clone(), stats, Some(Fault { part: LayerPart::Weights, what }));
    }
    // The state so far: the input itself until a part produces a new one (no copies).
    let mut y = Cow::Borrowed(x);
    for sub in 0..1 + usize::from(has_mlp) {
        let normed;
        let input: &Tracked<T> = if pre {
            normed = check(&mut fault, LayerPart::Norm, norm::normalise(cfg, &y));
            &normed
        } else {
            &y
        };
        let f = if sub == 0 {
            if fault.is_none() {
                fault = score_overflow(cfg, input).map(|what| Fault { part: LayerPart::Attention, what });
            }
            let (f, s) = attend(input);
            stats = s;
            let f = check(&mut fault, LayerPart::Attention, f);
            if fault.is_none() && underflowed(cfg, input, &f) {
                fault = Some(Fault {
                    part: LayerPart::Attention,
                    what: format!(
                        "the residual fell below the range of its log scale (l = -inf from l = {:.6e}, g = {:.6e}): \
                         the collapse of this layer is beyond what an f64 logarithm holds",
                        input.log_res, input.log_scale
                    ),
                });
            }
            f
        } else {
            check(&mut fault, LayerPart::Mlp, mlp::mlp(cfg, w.mlp.as_ref().unwrap(), input))
        };
        let mut next =
            if plain { f } else { check(&mut fault, LayerPart::Skip, Tracked::affine_sum(a, &y, b, &f)) };
        if post {
            next = check(&mut fault, LayerPart::Norm, norm::normalise(cfg, &next));
        }
        y = Cow::Owned(next);
    }
    (y.into_owned(), stats, fault)
}

/// Records the first part whose output is not a valid tracked state.
fn check<T: Real>(fault: &mut Option<Fault>, part: LayerPart, s: Tracked<T>) -> Tracked<T> {
    if fault.is_none() {
        *fault = s.fault().map(|what| Fault { part, what });
    }
    s
}

/// The scores of softmax attention are e^{2g+l} a_j + e^{2g+2l} b_ij (a_j, b_ij of the mean and
/// residual parts, see `attention`): when a log scale 2g + l or 2g + 2l reaches the f64 range
/// (ln f64::MAX = 709.78) they are infinite and the softmax has no value. Exact arithmetic would
/// give the hard argmax; the representation cannot, so the layer is a fault, with the scales.
fn score_overflow<T: Real>(cfg: &Config, input: &Tracked<T>) -> Option<String> {
    let (g, l) = (input.log_scale, input.log_res);
    if cfg.attention != Attention::Softmax || !g.is_finite() || !l.is_finite() {
        return None;
    }
    let top = f64::MAX.ln();
    let (la, lb) = (2.0 * g + l, 2.0 * g + 2.0 * l);
    (la >= top || lb >= top).then(|| {
        format!(
            "the attention scores overflow f64: their log scales 2g + l = {la:.6e} and 2g + 2l = {lb:.6e} \
             (g = {g:.6e}, l = {l:.6e}) reach ln(f64::MAX) = {top:.2} (reduce the value or weight scales)"
        )
    })
}

/// Softmax attention of a state with a residual never returns an exactly rank-one state (its
/// weights are positive and the tokens distinct); an output residual scale of -inf then means
/// that l itself overflowed, e.g. e^{-e^{2g}} for a score scale g beyond ~350.
fn underflowed<T: Real>(cfg: &Config, input: &Tracked<T>, out: &Tracked<T>) -> bool {
    cfg.attention == Attention::Softmax
        && input.log_scale.is_finite()
        && input.log_res.is_finite()
        && out.log_scale.is_finite()
        && out.log_res == f64::NEG_INFINITY
}
