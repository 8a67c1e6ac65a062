//! The bare counter-based generator on the device (shaders/philox.wgsl): its blocks, for the
//! known-answer test against `rng::philox4x32_10`.

use super::GpuContext;

/// The uniform block of shaders/philox.wgsl (`Params`; `_pad` rounds it to a uniform's 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PhiloxParams {
    pub key0: u32,
    pub key1: u32,
    pub sequence: u32,
    pub stream: u32,
    pub count: u32,
    pub _pad: [u32; 3],
}

impl GpuContext {
    /// Philox4x32-10 blocks 0..count of (seed, stream, sequence) computed on the GPU: the same
    /// words as `rng::philox4x32_10([q, 0, sequence, stream], seed)` (counts up to 2^32 blocks).
    pub fn philox_blocks(
        &self,
        seed: u64,
        stream: u32,
        sequence: u32,
        count: u32,
    ) -> anyhow::Result<Vec<[u32; 4]>> {
        let params = PhiloxParams {
            key0: seed as u32,
            key1: (seed >> 32) as u32,
            sequence,
            stream,
            count,
            _pad: [0; 3],
        };
        let uniform =
            self.buffer_with("philox params", bytemuck::bytes_of(&params), wgpu::BufferUsages::UNIFORM);
        let size = u64::from(count.max(1)) * 16;
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("philox out"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let pipeline = self.pipeline_entry("philox", "main")?;
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("philox"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: out.as_entire_binding() },
            ],
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(count.div_ceil(64), 1, 1);
        }
        self.queue.submit([enc.finish()]);
        let words: Vec<u32> = self.read_back(&out, size)?;
        Ok(words.chunks_exact(4).take(count as usize).map(|c| [c[0], c[1], c[2], c[3]]).collect())
    }
}
