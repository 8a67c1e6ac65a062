//! `Config`: the validated description of one run. The CLI, the engines, the manifest and (later)
//! the sweep expansion all read it; its TOML/JSON field names are the CLI flag names with `-`
//! replaced by `_`, and every enumerated value has one spelling shared by flags and files.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A configuration error: names the field, the offending value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} = {value:?} is invalid: {allowed}")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: String,
    pub allowed: String,
}

fn bad(field: &'static str, value: impl fmt::Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError { field, value: value.to_string(), allowed: allowed.into() }
}

/// Declares a string-valued enum: parsed by `FromStr`, printed by `Display`, serialised as its
/// string so that flags, TOML and JSON share one spelling.
macro_rules! string_enum {
    ($name:ident) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An unknown key in a configuration file, a sweep spec or `--set`, with the closest valid name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown key `{key}` {place}: did you mean `{closest}`?{listing}")]
pub struct UnknownKey {
    pub key: String,
    pub place: String,
    pub closest: &'static str,
    /// The valid names, when none of them is close (empty otherwise).
    listing: String,
}

/// The field names serde reads for `T` (captured from `deserialize_struct`): the one list of
/// valid keys of a struct, so that no second table of names can drift from the struct.
pub fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor};
    struct Capture<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Capture<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Error::custom("field names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// Rejects the first key that is not in `valid`, naming the closest valid one (Damerau-Levenshtein
/// distance, so a transposition like `depht` counts as one edit). `place` says where the key was.
pub fn check_keys<'k>(
    keys: impl IntoIterator<Item = &'k String>,
    valid: &'static [&'static str],
    place: &str,
) -> Result<(), UnknownKey> {
    for key in keys {
        if valid.contains(&key.as_str()) {
            continue;
        }
        let distance = |name: &str| strsim::damerau_levenshtein(&key.replace('-', "_"), name);
        let closest = valid.iter().copied().min_by_key(|name| distance(name)).unwrap_or("");
        // A suggestion that changes more than a third of the name is a guess: list them all.
        let far = distance(closest) * 3 > closest.len().max(key.len());
        let listing = if far { format!(" (valid keys: {})", valid.join(", ")) } else { String::new() };
        return Err(UnknownKey { key: key.clone(), place: place.to_string(), closest, listing });
    }
    Ok(())
}

fn parse_num<T: FromStr>(field: &'static str, s: &str, allowed: &str) -> Result<T, ConfigError> {
    s.trim().parse::<T>().map_err(|_| bad(field, s, allowed))
}

/// A finite number: "nan" and "inf" are rejected where they are written, naming the field.
fn parse_finite(field: &'static str, s: &str, allowed: &str) -> Result<f64, ConfigError> {
    parse_num::<f64>(field, s, allowed).and_then(|x| {
        if x.is_finite() {
            Ok(x)
        } else {
            Err(bad(field, s, allowed))
        }
    })
}

/// Which keys each query may attend to. All neighbourhoods are contiguous ranges of positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mask {
    Full,
    Causal,
    /// Two-sided window: |i - j| < w.
    Window(usize),
    /// Causal window: i - w < j <= i.
    CausalWindow(usize),
}

const MASK_ALLOWED: &str = "one of full, causal, window:W, causal-window:W with W >= 1";

impl FromStr for Mask {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.split_once(':') {
            None if s == "full" => Ok(Mask::Full),
            None if s == "causal" => Ok(Mask::Causal),
            Some(("window", w)) => Ok(Mask::Window(parse_num("mask", w, MASK_ALLOWED)?)),
            Some(("causal-window", w)) => Ok(Mask::CausalWindow(parse_num("mask", w, MASK_ALLOWED)?)),
            _ => Err(bad("mask", s, MASK_ALLOWED)),
        }
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mask::Full => write!(f, "full"),
            Mask::Causal => write!(f, "causal"),
            Mask::Window(w) => write!(f, "window:{w}"),
            Mask::CausalWindow(w) => write!(f, "causal-window:{w}"),
        }
    }
}
string_enum!(Mask);

impl Mask {
    /// The keys query `i` attends to, as the half-open range `lo..hi` (never empty).
    pub fn range(&self, i: usize, n: usize) -> (usize, usize) {
        match *self {
            Mask::Full => (0, n),
            Mask::Causal => (0, i + 1),
            Mask::Window(w) => (i.saturating_sub(w - 1), (i + w).min(n)),
            Mask::CausalWindow(w) => (i.saturating_sub(w - 1), i + 1),
        }
    }
}

/// Where the attention matrix comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// Row softmax of the key-query scores.
    Softmax,
    /// Input-independent random Markov matrix: logits iid N(-ln2/2, ln2), row softmax.
    Markov,
    /// Uniform over each query's neighbourhood.
    Uniform,
    /// The identity matrix.
    Identity,
}

impl FromStr for Attention {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "softmax" => Ok(Attention::Softmax),
            "markov" => Ok(Attention::Markov),
            "uniform" => Ok(Attention::Uniform),
            "identity" => Ok(Attention::Identity),
            _ => Err(bad("attention", s, "one of softmax, markov, uniform, identity")),
        }
    }
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attention::Softmax => "softmax",
            Attention::Markov => "markov",
            Attention::Uniform => "uniform",
            Attention::Identity => "identity",
        })
    }
}
string_enum!(Attention);

/// The kind of token normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// LayerNorm: centre over features, divide by sqrt(var + eps).
    Layer,
    /// RMSNorm: divide by sqrt(mean square + eps).
    Rms,
    /// Projection onto the unit sphere: x / |x|.
    Sphere,
}

/// Normalisation and where it sits (before each sublayer, or after each residual sum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    None,
    Pre(NormKind),
    Post(NormKind),
}

const NORM_ALLOWED: &str =
    "one of none, pre-ln, post-ln, rms (= post-rms), pre-rms, post-rms, sphere (= post-sphere), pre-sphere, post-sphere";

impl FromStr for Norm {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        use NormKind::*;
        Ok(match s {
            "none" => Norm::None,
            "pre-ln" => Norm::Pre(Layer),
            "post-ln" => Norm::Post(Layer),
            "rms" | "post-rms" => Norm::Post(Rms),
            "pre-rms" => Norm::Pre(Rms),
            "sphere" | "post-sphere" => Norm::Post(Sphere),
            "pre-sphere" => Norm::Pre(Sphere),
            _ => return Err(bad("norm", s, NORM_ALLOWED)),
        })
    }
}

impl fmt::Display for Norm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = |k: &NormKind| match k {
            NormKind::Layer => "ln",
            NormKind::Rms => "rms",
            NormKind::Sphere => "sphere",
        };
        match self {
            Norm::None => write!(f, "none"),
            Norm::Pre(k) => write!(f, "pre-{}", kind(k)),
            Norm::Post(k) => write!(f, "post-{}", kind(k)),
        }
    }
}
string_enum!(Norm);

/// Residual (skip) connection around each sublayer: out = a X + b f(X).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Skip {
    None,
    Standard,
    Scaled(f64, f64),
}

const SKIP_ALLOWED: &str = "one of none, standard, scaled:A,B with finite A and B";

impl FromStr for Skip {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.split_once(':') {
            None if s == "none" => Ok(Skip::None),
            None if s == "standard" => Ok(Skip::Standard),
            Some(("scaled", ab)) => {
                let (a, b) = ab.split_once(',').ok_or_else(|| bad("skip", s, SKIP_ALLOWED))?;
                Ok(Skip::Scaled(
                    parse_finite("skip", a, SKIP_ALLOWED)?,
                    parse_finite("skip", b, SKIP_ALLOWED)?,
                ))
            }
            _ => Err(bad("skip", s, SKIP_ALLOWED)),
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::None => write!(f, "none"),
            Skip::Standard => write!(f, "standard"),
            Skip::Scaled(a, b) => write!(f, "scaled:{a},{b}"),
        }
    }
}
string_enum!(Skip);

impl Skip {
    /// The coefficients (a, b) of out = a X + b f(X).
    pub fn coefficients(&self) -> (f64, f64) {
        match *self {
            Skip::None => (0.0, 1.0),
            Skip::Standard => (1.0, 1.0),
            Skip::Scaled(a, b) => (a, b),
        }
    }
}

/// Elementwise activation of the MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// The exact GELU, x * Phi(x).
    Gelu,
}

/// The MLP sublayer: none, or activation with hidden width = multiplier x width.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mlp {
    None,
    Hidden(Activation, f64),
}

const MLP_ALLOWED: &str = "one of none, relu:K, gelu:K with width multiplier K > 0";

impl FromStr for Mlp {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.split_once(':') {
            None if s == "none" => Ok(Mlp::None),
            Some(("relu", k)) => Ok(Mlp::Hidden(Activation::Relu, parse_finite("mlp", k, MLP_ALLOWED)?)),
            Some(("gelu", k)) => Ok(Mlp::Hidden(Activation::Gelu, parse_finite("mlp", k, MLP_ALLOWED)?)),
            _ => Err(bad("mlp", s, MLP_ALLOWED)),
        }
    }
}

impl fmt::Display for Mlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mlp::None => write!(f, "none"),
            Mlp::Hidden(Activation::Relu, k) => write!(f, "relu:{k}"),
            Mlp::Hidden(Activation::Gelu, k) => write!(f, "gelu:{k}"),
        }
    }
}
string_enum!(Mlp);

/// How a weight matrix is drawn. Which families a given matrix accepts is checked by
/// [`Config::validate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weights {
    /// iid N(0, std^2); `None` means std = 1/sqrt(fan_in).
    Gaussian(Option<f64>),
    /// Haar-random orthogonal (square only).
    Orthogonal,
    /// The identity (square only).
    Identity,
    /// c times the identity (square only).
    ScaledIdentity(f64),
    /// No matrix at all (the output projection only).
    None,
}

const WEIGHTS_ALLOWED: &str =
    "one of gaussian (std 1/sqrt(fan-in)), gaussian:STD, orthogonal, identity, scaled-identity:C, none";

impl FromStr for Weights {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.split_once(':') {
            None => match s {
                "gaussian" => Ok(Weights::Gaussian(None)),
                "orthogonal" => Ok(Weights::Orthogonal),
                "identity" => Ok(Weights::Identity),
                "none" => Ok(Weights::None),
                _ => Err(bad("weights", s, WEIGHTS_ALLOWED)),
            },
            Some(("gaussian", std)) => {
                Ok(Weights::Gaussian(Some(parse_finite("weights", std, WEIGHTS_ALLOWED)?)))
            }
            Some(("scaled-identity", c)) => {
                Ok(Weights::ScaledIdentity(parse_finite("weights", c, WEIGHTS_ALLOWED)?))
            }
            _ => Err(bad("weights", s, WEIGHTS_ALLOWED)),
        }
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weights::Gaussian(None) => write!(f, "gaussian"),
            Weights::Gaussian(Some(s)) => write!(f, "gaussian:{s}"),
            Weights::Orthogonal => write!(f, "orthogonal"),
            Weights::Identity => write!(f, "identity"),
            Weights::ScaledIdentity(c) => write!(f, "scaled-identity:{c}"),
            Weights::None => write!(f, "none"),
        }
    }
}
string_enum!(Weights);

/// How the input tokens are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Input {
    /// iid N(0, 1) entries.
    Gaussian,
    /// Orthonormal rows (needs tokens <= width).
    Orthonormal,
    /// Rows uniform on the unit sphere.
    Sphere,
    /// x_i = sqrt(rho) v + sqrt(1 - rho) g_i with v, g_i iid N(0, I): token correlation rho.
    Shared(f64),
}

const INPUT_ALLOWED: &str = "one of gaussian, orthonormal, sphere, shared:RHO with 0 <= RHO <= 1";

impl FromStr for Input {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.split_once(':') {
            None if s == "gaussian" => Ok(Input::Gaussian),
            None if s == "orthonormal" => Ok(Input::Orthonormal),
            None if s == "sphere" => Ok(Input::Sphere),
            Some(("shared", rho)) => Ok(Input::Shared(parse_finite("input", rho, INPUT_ALLOWED)?)),
            _ => Err(bad("input", s, INPUT_ALLOWED)),
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Gaussian => write!(f, "gaussian"),
            Input::Orthonormal => write!(f, "orthonormal"),
            Input::Sphere => write!(f, "sphere"),
            Input::Shared(rho) => write!(f, "shared:{rho}"),
        }
    }
}
string_enum!(Input);

/// Which engine runs the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Auto,
    Cpu,
    Gpu,
}

impl FromStr for Engine {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "auto" => Ok(Engine::Auto),
            "cpu" => Ok(Engine::Cpu),
            "gpu" => Ok(Engine::Gpu),
            _ => Err(bad("engine", s, "one of auto, cpu, gpu")),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Auto => "auto",
            Engine::Cpu => "cpu",
            Engine::Gpu => "gpu",
        })
    }
}
string_enum!(Engine);

/// Floating-point type of the CPU engine's tracked state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F64,
}

impl FromStr for Precision {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "f32" => Ok(Precision::F32),
            "f64" => Ok(Precision::F64),
            _ => Err(bad("precision", s, "one of f32, f64")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        })
    }
}
string_enum!(Precision);

/// The description of one run. Field names are the CLI flag names with `-` replaced by `_`.
/// `None` in an optional field means "the documented default derived from the others"; use the
/// accessor methods (`head_rank()`, ...) to read resolved values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub depth: usize,
    pub tokens: usize,
    pub width: usize,
    pub heads: usize,
    /// Rank r of W_Q, W_K (default width / heads).
    pub head_rank: Option<usize>,
    /// Value dimension d_v per head (default width / heads).
    pub value_dim: Option<usize>,
    pub mask: Mask,
    pub attention: Attention,
    /// Use A - 11^T/n instead of A.
    pub remove_outlier: bool,
    /// Score temperature tau in z = tau <q, k> (default 1/sqrt(head_rank)).
    pub temperature: Option<f64>,
    pub norm: Norm,
    pub norm_eps: f64,
    pub norm_gain: f64,
    pub norm_bias: f64,
    pub skip: Skip,
    pub mlp: Mlp,
    /// Weights of both MLP matrices.
    pub mlp_weights: Weights,
    /// W_V of every head.
    pub value: Weights,
    /// W_Q and W_K of every head.
    pub qk: Weights,
    /// W_O (or none: heads are concatenated).
    pub out_proj: Weights,
    pub input: Input,
    /// The same weights in every layer.
    pub share_layers: bool,
    /// A fresh network for every sequence (default: one network for the whole batch).
    pub per_sequence_weights: bool,
    pub sequences: usize,
    pub seed: u64,
    pub engine: Engine,
    pub precision: Precision,
    /// Compute the attention spectrum every k-th layer (0: never); it costs O(n^2) memory.
    pub spectrum_every: usize,
    /// Worker threads of the CPU engine (0: all cores).
    pub threads: usize,
    /// GPU adapter: index or name substring (see `rankcollapse devices`); default: the
    /// WGPU_ADAPTER_NAME variable, else the first hardware adapter, else the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// Device memory the GPU engine may use for one chunk of sequences, in MiB.
    #[serde(skip_serializing_if = "is_default_gpu_memory")]
    pub gpu_memory_mb: usize,
    /// Sequences per GPU chunk (0: as many as fit the memory budget and the binding limit).
    #[serde(skip_serializing_if = "is_zero")]
    pub chunk: usize,
    /// Print a per-kernel GPU timing table (timestamp queries) to stderr; GPU engine only.
    #[serde(skip_serializing_if = "is_false")]
    pub profile: bool,
}

const DEFAULT_GPU_MEMORY_MB: usize = 1024;
fn is_default_gpu_memory(v: &usize) -> bool {
    *v == DEFAULT_GPU_MEMORY_MB
}
fn is_zero(v: &usize) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

impl Default for Config {
    fn default() -> Self {
        Config {
            depth: 8,
            tokens: 32,
            width: 32,
            heads: 1,
            head_rank: None,
            value_dim: None,
            mask: Mask::Full,
            attention: Attention::Softmax,
            remove_outlier: false,
            temperature: None,
            norm: Norm::None,
            norm_eps: 1e-5,
            norm_gain: 1.0,
            norm_bias: 0.0,
            skip: Skip::None,
            mlp: Mlp::None,
            mlp_weights: Weights::Gaussian(None),
            value: Weights::Gaussian(None),
            qk: Weights::Gaussian(None),
            out_proj: Weights::Identity,
            input: Input::Gaussian,
            share_layers: false,
            per_sequence_weights: false,
            sequences: 16,
            seed: 0,
            engine: Engine::Auto,
            precision: Precision::F64,
            spectrum_every: 1,
            threads: 0,
            adapter: None,
            gpu_memory_mb: DEFAULT_GPU_MEMORY_MB,
            chunk: 0,
            profile: false,
        }
    }
}

/// Largest layer index and head count the random stream layout can address.
pub const MAX_LAYERS: usize = 1 << 20;
pub const MAX_HEADS: usize = 1 << 8;
/// Most entries of any one matrix of a sequence (state, weights, attention for the spectrum):
/// 2^32, 32 GiB in f64. Larger runs are typing mistakes, and their sizes would overflow.
pub const MAX_MATRIX_ENTRIES: u128 = 1 << 32;
/// Most rows of per-sequence results, sequences x depth (each row is a few hundred bytes).
pub const MAX_SEQUENCE_LAYERS: u128 = 1 << 30;
pub const MAX_THREADS: usize = 4096;
/// 1 TiB: more than any device has.
pub const MAX_GPU_MEMORY_MB: usize = 1 << 20;

/// Rejects `factors` whose product exceeds `limit`, naming the largest factor (the likely typo).
fn check_size(what: &str, factors: &[(&'static str, usize)], limit: u128) -> Result<(), ConfigError> {
    let product = factors.iter().fold(1u128, |p, &(_, v)| p.saturating_mul(v as u128));
    if product <= limit {
        return Ok(());
    }
    let &(field, value) = factors.iter().max_by_key(|(_, v)| *v).expect("at least one factor");
    let named: Vec<String> = factors.iter().map(|(f, v)| format!("{f} ({v})")).collect();
    Err(bad(
        field,
        value,
        format!("{what}: {} = {product} is more than the {limit} allowed", named.join(" x ")),
    ))
}

impl Config {
    pub fn head_rank(&self) -> usize {
        self.head_rank.unwrap_or((self.width / self.heads.max(1)).max(1))
    }
    pub fn value_dim(&self) -> usize {
        self.value_dim.unwrap_or((self.width / self.heads.max(1)).max(1))
    }
    pub fn temperature(&self) -> f64 {
        self.temperature.unwrap_or(1.0 / (self.head_rank() as f64).sqrt())
    }
    /// Hidden width of the MLP (0 when there is none).
    pub fn mlp_hidden(&self) -> usize {
        match self.mlp {
            Mlp::None => 0,
            Mlp::Hidden(_, k) => (k * self.width as f64).round() as usize,
        }
    }
    /// The configuration without the settings that only say how to run it (threads, adapter,
    /// GPU memory, chunk, profile), none of which changes a result on a given engine: what sweep
    /// point ids and derived seeds are computed from.
    pub fn without_execution_settings(&self) -> Config {
        Config {
            threads: 0,
            adapter: None,
            gpu_memory_mb: DEFAULT_GPU_MEMORY_MB,
            chunk: 0,
            profile: false,
            ..self.clone()
        }
    }

    /// Whether the attention spectrum is computed after layer `layer` (1-based).
    pub fn spectrum_at(&self, layer: usize) -> bool {
        self.spectrum_every > 0 && layer % self.spectrum_every == 0
    }

    /// Checks every field and cross-field constraint; the error names the field, the value and
    /// what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &'static str, v: usize| {
            if v == 0 {
                Err(bad(field, v, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("depth", self.depth)?;
        if self.depth >= MAX_LAYERS {
            return Err(bad("depth", self.depth, format!("must be below {MAX_LAYERS}")));
        }
        if self.tokens < 2 {
            return Err(bad("tokens", self.tokens, "must be at least 2 (collapse compares tokens)"));
        }
        positive("width", self.width)?;
        positive("heads", self.heads)?;
        if self.heads > MAX_HEADS {
            return Err(bad("heads", self.heads, format!("must be at most {MAX_HEADS}")));
        }
        if let Some(r) = self.head_rank {
            positive("head_rank", r)?;
            if r > self.width {
                return Err(bad(
                    "head_rank",
                    r,
                    format!(
                        "must be at most width = {} (the rank of W_Q W_K^T cannot exceed it)",
                        self.width
                    ),
                ));
            }
        }
        if let Some(v) = self.value_dim {
            positive("value_dim", v)?;
        }
        positive("sequences", self.sequences)?;
        if self.sequences > u32::MAX as usize - 1 {
            return Err(bad("sequences", self.sequences, "must fit in 32 bits"));
        }
        match self.mask {
            Mask::Window(w) | Mask::CausalWindow(w) if w == 0 || w > self.tokens => {
                return Err(bad(
                    "mask",
                    self.mask,
                    format!("window W must satisfy 1 <= W <= tokens = {}", self.tokens),
                ));
            }
            _ => {}
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t > 0.0) {
                return Err(bad("temperature", t, "must be finite and > 0"));
            }
        }
        let finite = |field: &'static str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(bad(field, v, "must be finite"))
            }
        };
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(bad("norm_eps", self.norm_eps, "must be finite and > 0"));
        }
        finite("norm_gain", self.norm_gain)?;
        finite("norm_bias", self.norm_bias)?;
        if let Skip::Scaled(a, b) = self.skip {
            if !(a.is_finite() && b.is_finite()) {
                return Err(bad("skip", self.skip, SKIP_ALLOWED));
            }
        }
        if let Mlp::Hidden(_, k) = self.mlp {
            let hidden = k * self.width as f64;
            if !(k.is_finite() && k > 0.0 && hidden <= MAX_MATRIX_ENTRIES as f64) || self.mlp_hidden() == 0 {
                return Err(bad(
                    "mlp",
                    self.mlp,
                    format!(
                        "width multiplier K must be > 0 with 1 <= K x width <= {MAX_MATRIX_ENTRIES} (width = {})",
                        self.width
                    ),
                ));
            }
        }
        self.check_sizes()?;
        if let Input::Shared(rho) = self.input {
            if !(0.0..=1.0).contains(&rho) {
                return Err(bad("input", self.input, INPUT_ALLOWED));
            }
        }
        if self.input == Input::Orthonormal && self.tokens > self.width {
            return Err(bad(
                "input",
                self.input,
                format!("orthonormal rows need tokens ({}) <= width ({})", self.tokens, self.width),
            ));
        }
        let d = self.width;
        let concat = self.heads * self.value_dim();
        self.check_weights("qk", self.qk, d, self.head_rank(), false)?;
        self.check_weights("value", self.value, d, self.value_dim(), false)?;
        self.check_weights("out_proj", self.out_proj, concat, d, true)?;
        if self.out_proj == Weights::None && concat != d {
            return Err(bad(
                "out_proj",
                self.out_proj,
                format!(
                    "none needs heads x value_dim = width, but {} x {} != {d}",
                    self.heads,
                    self.value_dim()
                ),
            ));
        }
        if self.mlp != Mlp::None {
            let h = self.mlp_hidden();
            self.check_weights("mlp_weights", self.mlp_weights, d, h, false)?;
            self.check_weights("mlp_weights", self.mlp_weights, h, d, false)?;
        }
        if self.gpu_memory_mb == 0 || self.gpu_memory_mb > MAX_GPU_MEMORY_MB {
            return Err(bad(
                "gpu_memory_mb",
                self.gpu_memory_mb,
                format!("a number of MiB from 1 to {MAX_GPU_MEMORY_MB} (1 TiB)"),
            ));
        }
        if self.threads > MAX_THREADS {
            return Err(bad("threads", self.threads, format!("0 (all cores) to {MAX_THREADS}")));
        }
        if let Some(a) = &self.adapter {
            if a.trim().is_empty() {
                return Err(bad(
                    "adapter",
                    "\"\"",
                    "an adapter index or a name substring (see rankcollapse devices)",
                ));
            }
        }
        Ok(())
    }

    /// Sizes whose products would overflow or ask for terabytes: every matrix of one sequence,
    /// the n x n attention matrix when the spectrum is on, and the rows of results.
    fn check_sizes(&self) -> Result<(), ConfigError> {
        let (n, d, h) = (self.tokens, self.width, self.heads);
        let m = MAX_MATRIX_ENTRIES;
        check_size("one sequence's state", &[("tokens", n), ("width", d)], m)?;
        check_size(
            "W_Q and W_K of a layer",
            &[("width", d), ("heads", h), ("head_rank", self.head_rank())],
            m,
        )?;
        check_size("W_V of a layer", &[("width", d), ("heads", h), ("value_dim", self.value_dim())], m)?;
        check_size(
            "the concatenated heads",
            &[("tokens", n), ("heads", h), ("value_dim", self.value_dim())],
            m,
        )?;
        if self.mlp != Mlp::None {
            let hidden = self.mlp_hidden();
            let mlp = |what, rows: (&'static str, usize)| {
                check_size(what, &[rows, ("mlp", hidden)], m).map_err(|e| ConfigError {
                    field: "mlp",
                    value: self.mlp.to_string(),
                    allowed: e.allowed,
                })
            };
            mlp("the MLP's weights (mlp = hidden width)", ("width", d))?;
            mlp("the MLP's hidden state (mlp = hidden width)", ("tokens", n))?;
        }
        if self.spectrum_every > 0 && self.spectrum_every <= self.depth {
            check_size(
                "the attention matrix the spectrum forms (spectrum_every = 0 turns it off)",
                &[("tokens", n), ("tokens", n)],
                m,
            )?;
        }
        check_size(
            "per-sequence results",
            &[("sequences", self.sequences), ("depth", self.depth)],
            MAX_SEQUENCE_LAYERS,
        )
    }

    fn check_weights(
        &self,
        field: &'static str,
        w: Weights,
        rows: usize,
        cols: usize,
        allow_none: bool,
    ) -> Result<(), ConfigError> {
        match w {
            Weights::Gaussian(Some(std)) if !(std.is_finite() && std >= 0.0) => {
                Err(bad(field, w, "gaussian std must be finite and >= 0"))
            }
            Weights::ScaledIdentity(c) if !c.is_finite() => {
                Err(bad(field, w, "scaled-identity factor must be finite"))
            }
            Weights::Orthogonal | Weights::Identity | Weights::ScaledIdentity(_) if rows != cols => {
                Err(bad(field, w, format!("{w} needs a square matrix, but this one is {rows} x {cols}")))
            }
            Weights::None if !allow_none => Err(bad(field, w, "none is allowed for out_proj only")),
            _ => Ok(()),
        }
    }

    /// Every key a configuration file, a sweep's `[fixed]` and `[grid]` and `--set` accept.
    pub fn keys() -> &'static [&'static str] {
        field_names::<Config>()
    }

    /// Parses a TOML document; an unknown key is an error naming the closest valid key. Values
    /// are not validated here (see [`Config::validate`]).
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let table: toml::Table = text.parse()?;
        check_keys(table.keys(), Config::keys(), "in the configuration")?;
        // Deserialised from the text again so that type errors keep toml's line and column.
        Ok(toml::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_string() {
        for s in ["full", "causal", "window:3", "causal-window:5"] {
            assert_eq!(s.parse::<Mask>().unwrap().to_string(), s);
        }
        for s in ["none", "pre-ln", "post-ln", "pre-rms", "post-rms", "pre-sphere", "post-sphere"] {
            assert_eq!(s.parse::<Norm>().unwrap().to_string(), s);
        }
        for s in ["none", "standard", "scaled:0.5,2"] {
            assert_eq!(s.parse::<Skip>().unwrap().to_string(), s);
        }
        for s in ["gaussian", "gaussian:0.02", "orthogonal", "identity", "scaled-identity:2", "none"] {
            assert_eq!(s.parse::<Weights>().unwrap().to_string(), s);
        }
        assert_eq!("rms".parse::<Norm>().unwrap(), Norm::Post(NormKind::Rms));
    }

    #[test]
    fn toml_and_json_use_flag_names() {
        let c = Config::from_toml("depth = 3\nmask = \"window:4\"\nremove_outlier = true\n").unwrap();
        assert_eq!((c.depth, c.mask, c.remove_outlier), (3, Mask::Window(4), true));
        let json = serde_json::to_string(&c).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let err = Config::from_toml("dept = 3\n").unwrap_err().to_string();
        assert!(err.contains("dept"), "{err}");
    }
}
