//! `Config::validate`: every field and cross-field constraint of a run, checked in a fixed order
//! so that the first error is always the same, and the size limits that keep a typing mistake
//! from overflowing or asking for terabytes.

use super::error::{bad, ConfigError};
use super::values::{Input, Mask, Mlp, Skip, Weights, INPUT_ALLOWED, SKIP_ALLOWED};
use super::Config;

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
    /// Checks every field and cross-field constraint; the error names the field, the value and
    /// what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // In this order, so that a configuration with several faults always reports the same one.
        self.check_shape()?;
        self.check_coefficients()?;
        self.check_sizes()?;
        self.check_input()?;
        self.check_matrices()?;
        self.check_execution_settings()
    }

    /// Depth, tokens, width, heads, head rank, value dimension, sequences and the mask window.
    fn check_shape(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Temperature, normalisation constants, skip coefficients and the MLP width multiplier.
    fn check_coefficients(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The input distribution against the shape.
    fn check_input(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Each weight family against the shape of the matrices it draws.
    fn check_matrices(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Threads, GPU memory and adapter: how to run, never what is computed.
    fn check_execution_settings(&self) -> Result<(), ConfigError> {
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
}
