//! The enumerated values of a run (mask, attention, norm, skip, MLP, weights, input, engine,
//! precision): each parsed by `FromStr` and printed by `Display` in the one spelling that flags,
//! TOML and JSON share, with an error that lists what is allowed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use super::error::{bad, ConfigError};

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

pub(super) const SKIP_ALLOWED: &str = "one of none, standard, scaled:A,B with finite A and B";

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
/// [`Config::validate`](super::Config::validate).
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

pub(super) const INPUT_ALLOWED: &str = "one of gaussian, orthonormal, sphere, shared:RHO with 0 <= RHO <= 1";

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
