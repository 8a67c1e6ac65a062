//! `Config`: the validated description of one run. The CLI, the engines, the manifest and (later)
//! the sweep expansion all read it; its TOML/JSON field names are the CLI flag names with `-`
//! replaced by `_`, and every enumerated value has one spelling shared by flags and files.

use serde::{Deserialize, Serialize};

mod error;
mod validate;
mod values;

pub use error::{check_keys, field_names, ConfigError, UnknownKey};
pub use validate::{
    MAX_GPU_MEMORY_MB, MAX_HEADS, MAX_LAYERS, MAX_MATRIX_ENTRIES, MAX_SEQUENCE_LAYERS, MAX_THREADS,
};
pub use values::{Activation, Attention, Engine, Input, Mask, Mlp, Norm, NormKind, Precision, Skip, Weights};

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
