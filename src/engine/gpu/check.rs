//! The fault check (shaders/check.wgsl): after each layer part, flags the sequences whose state
//! is no longer a valid tracked state, with a code naming the layer and the part that did it (the
//! GPU twin of `model::apply_layer_checked`'s checks).

use super::chunk::{u, Chunk, St};
use crate::config::Attention;
use crate::model::LayerPart;

/// The uniform block of shaders/check.wgsl (`Params`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct CheckParams {
    pub(super) n: u32,
    pub(super) w: u32,
    pub(super) code: u32,
    pub(super) underflow_code: u32,
    pub(super) stride: u32,
    pub(super) count: u32,
    pub(super) _p0: u32,
    pub(super) _p1: u32,
}

/// The layer part a fault code names (code = 8 layer + part; the check kernel keeps the first).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum FaultPart {
    Attention = 1,
    Norm = 2,
    Mlp = 3,
    Skip = 4,
    /// Attention left a residual below the range of its f32 log scale.
    AttentionUnderflow = 5,
}

impl FaultPart {
    /// The part whose number a fault code holds (`code % 8`), if any.
    pub(super) fn from_number(part: u32) -> Option<FaultPart> {
        [Self::Attention, Self::Norm, Self::Mlp, Self::Skip, Self::AttentionUnderflow]
            .into_iter()
            .find(|p| *p as u32 == part)
    }

    /// The layer part, as the CPU engine's faults name it.
    pub(super) fn part(self) -> LayerPart {
        match self {
            FaultPart::Attention | FaultPart::AttentionUnderflow => LayerPart::Attention,
            FaultPart::Norm => LayerPart::Norm,
            FaultPart::Mlp => LayerPart::Mlp,
            FaultPart::Skip => LayerPart::Skip,
        }
    }
}

/// The code check.wgsl records for a fault of `part` in `layer` (1-based; 0 for no part: the
/// input, whose faults are not recorded).
pub(super) fn fault_code(layer: usize, part: Option<FaultPart>) -> u32 {
    u(8 * layer + part.map_or(0, |p| p as usize))
}

impl Chunk<'_> {
    /// Flags the sequences whose state `st` (the output of the part being applied) is not valid;
    /// `before` (the part's input) also lets attention flag a residual that fell off the log
    /// scale's range. Each part calls it on its output (not the copies a plain part makes).
    pub(super) fn check(&mut self, st: &St, before: Option<&St>) {
        let code = fault_code(self.layer, self.part);
        let underflow = match before {
            Some(_) if self.cfg.attention == Attention::Softmax => {
                fault_code(self.layer, Some(FaultPart::AttentionUnderflow))
            }
            _ => 0,
        };
        let before = before.unwrap_or(st).scal.clone();
        self.check_logs(st, &st.scal.clone(), (4, 2), &before, code, underflow);
    }

    /// The check kernel on st's rows with the log scales `logs` ((stride, count) per sequence).
    pub(super) fn check_logs(
        &mut self,
        st: &St,
        logs: &wgpu::Buffer,
        (stride, count): (usize, usize),
        before: &wgpu::Buffer,
        code: u32,
        underflow_code: u32,
    ) {
        let p = CheckParams {
            n: u(self.n),
            w: u(st.w),
            code,
            underflow_code,
            stride: u(stride),
            count: u(count),
            _p0: 0,
            _p1: 0,
        };
        let faults = self.faults.clone();
        self.dispatch(
            "check",
            "check",
            &p,
            &[(1, &st.data), (2, logs), (3, before), (4, &faults)],
            (self.batch as u32, 1, 1),
        );
    }
}
