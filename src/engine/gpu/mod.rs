//! The GPU side (wgpu 30, any backend): adapter enumeration for `rankcollapse devices`, the
//! device context, the shader table, the one read-back path, and the kernels built so far.

pub mod engine;
pub mod profile;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// One WGSL source (one kernel family): the engine loads its entry points from this table, and
/// a test validates every entry with naga.
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    pub entries: &'static [&'static str],
}

macro_rules! family {
    ($name:literal, [$($entry:literal),*]) => {
        Shader {
            name: $name,
            source: concat!(
                include_str!("../../../shaders/common.wgsl"),
                include_str!(concat!("../../../shaders/", $name, ".wgsl"))
            ),
            entries: &[$($entry),*],
        }
    };
}

/// Every shader of the engine. `philox` exposes the bare generator (its known-answer test); every
/// family is prefixed with `common.wgsl` (generator, -inf sentinel, expm1, reductions).
pub const SHADERS: &[Shader] = &[
    family!("philox", ["main"]),
    family!("generate", ["weights", "inputs"]),
    family!("linear", ["matmul", "gram"]),
    family!("state", ["compose", "skip"]),
    family!("attention", ["prep", "argmax_rows", "onehot", "attend", "dense"]),
    family!("norm", ["normalise"]),
    family!("activation", ["activate"]),
    family!("metrics", ["cosines", "metrics"]),
    family!("check", ["check"]),
];

/// Adapter properties that matter to us, for `rankcollapse devices`.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
}

fn instance() -> wgpu::Instance {
    // WGPU_BACKEND (and the other WGPU_* variables wgpu reads) are honoured here.
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter of every enabled backend, in wgpu's order (the index `--adapter` will take).
/// Enumerated once per process (`auto` asks for every run of a sweep or a preset).
pub fn adapters() -> Vec<AdapterSummary> {
    static LIST: std::sync::OnceLock<Vec<AdapterSummary>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        let instance = instance();
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .into_iter()
            .enumerate()
            .map(|(index, a)| AdapterSummary { index, info: a.get_info(), limits: a.limits() })
            .collect()
    })
    .clone()
}

/// The `rankcollapse devices` listing.
pub fn describe_adapters(list: &[AdapterSummary]) -> String {
    if list.is_empty() {
        return "no GPU adapters found (install a Vulkan driver, e.g. mesa-vulkan-drivers for the software one)\n"
            .into();
    }
    let mut out = String::new();
    for a in list {
        let i = &a.info;
        out += &format!(
            "[{}] {} | backend {:?} | type {:?} | driver {} {}\n    max storage binding {} B, max buffer {} B, workgroup {}x{}x{} (<= {} invocations), workgroup memory {} B, subgroups {}..{}\n",
            a.index,
            i.name,
            i.backend,
            i.device_type,
            i.driver,
            i.driver_info,
            a.limits.max_storage_buffer_binding_size,
            a.limits.max_buffer_size,
            a.limits.max_compute_workgroup_size_x,
            a.limits.max_compute_workgroup_size_y,
            a.limits.max_compute_workgroup_size_z,
            a.limits.max_compute_invocations_per_workgroup,
            a.limits.max_compute_workgroup_storage_size,
            i.subgroup_min_size,
            i.subgroup_max_size,
        );
    }
    out
}

/// Whether an adapter is real GPU hardware (not a software rasteriser such as lavapipe).
pub fn is_hardware(info: &wgpu::AdapterInfo) -> bool {
    matches!(
        info.device_type,
        wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu
    )
}

/// A device on one adapter, with the adapter's own limits (not the defaults).
pub struct GpuContext {
    pub info: wgpu::AdapterInfo,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// Errors no error scope caught, and why the device was lost: collected here (wgpu's default
    /// handler panics) and turned into an `Err` by [`GpuContext::check`].
    faults: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    /// Set by [`LOSE_DEVICE_HOOK`] on the device it names.
    destroy_pending: AtomicBool,
}

/// Test hook: `RANKCOLLAPSE_TEST_LOSE_DEVICE=K` destroys the K-th device this process creates
/// (counting from 1) in the middle of its first chunk (after the first layer's work has been
/// submitted), so that the lost-device path runs for real.
pub const LOSE_DEVICE_HOOK: &str = "RANKCOLLAPSE_TEST_LOSE_DEVICE";
static DEVICES_CREATED: AtomicUsize = AtomicUsize::new(0);

impl GpuContext {
    /// The first adapter whose index or name matches `selector` (WGPU_ADAPTER_NAME when None),
    /// else the first hardware adapter, else the first adapter.
    pub fn new(selector: Option<&str>) -> anyhow::Result<GpuContext> {
        let instance = instance();
        let all = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let wanted = selector.map(str::to_string).or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let adapter = match &wanted {
            // An index is an index (adapter names hold digits too), else a name substring.
            Some(s) => match s.trim().parse::<usize>() {
                Ok(i) => all.into_iter().nth(i).ok_or_else(|| {
                    anyhow::anyhow!("no GPU adapter has index {i} (see rankcollapse devices)")
                })?,
                Err(_) => all
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&s.to_lowercase()))
                    .ok_or_else(|| {
                        anyhow::anyhow!("no GPU adapter matches {s:?} (see rankcollapse devices)")
                    })?,
            },
            None => {
                let hardware = all.iter().position(|a| is_hardware(&a.get_info())).unwrap_or(0);
                all.into_iter().nth(hardware).ok_or_else(|| anyhow::anyhow!("no GPU adapter found"))?
            }
        };
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("rankcollapse"),
            required_limits: adapter.limits(),
            // For --profile; harmless when unused.
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            ..Default::default()
        }))
        .map_err(|e| anyhow::anyhow!("requesting a device on {}: {e}", info.name))?;
        let faults = Arc::new(Mutex::new(Vec::new()));
        let lost = Arc::new(Mutex::new(None));
        let sink = faults.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }));
        let why = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{reason:?}: {message}"));
        });
        let created = DEVICES_CREATED.fetch_add(1, Ordering::SeqCst) + 1;
        let hooked = std::env::var(LOSE_DEVICE_HOOK).is_ok_and(|k| k.trim().parse() == Ok(created));
        Ok(GpuContext { info, device, queue, faults, lost, destroy_pending: AtomicBool::new(hooked) })
    }

    /// Destroys the device if [`LOSE_DEVICE_HOOK`] asked for it and it has not been done yet.
    pub(crate) fn lose_if_hooked(&self) {
        if self.destroy_pending.swap(false, Ordering::SeqCst) {
            eprintln!("[rankcollapse] test hook {LOSE_DEVICE_HOOK}: destroying the device mid-chunk");
            self.device.destroy();
        }
    }

    /// A buffer holding `contents`, written through the queue: unlike a buffer mapped at
    /// creation, this fails as a captured error (not a panic) on a lost device.
    pub(crate) fn buffer_with(
        &self,
        label: &str,
        contents: &[u8],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (contents.len() as u64).max(4).next_multiple_of(4),
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, contents);
        buffer
    }

    /// Why the device was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        // The lost-device callback runs when the device is polled.
        let _ = self.device.poll(wgpu::PollType::Poll);
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `Err` when the device was lost or an error escaped every error scope since the last check.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(why) = self.lost() {
            anyhow::bail!("the GPU device on {} was lost ({why})", self.info.name);
        }
        let errors = std::mem::take(&mut *self.faults.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(first) = errors.first() {
            anyhow::bail!("GPU error on {} ({} in all): {first}", self.info.name, errors.len());
        }
        Ok(())
    }

    pub(crate) fn pipeline_entry(&self, name: &str, entry: &str) -> anyhow::Result<wgpu::ComputePipeline> {
        let shader =
            SHADERS.iter().find(|s| s.name == name).ok_or_else(|| anyhow::anyhow!("no shader {name}"))?;
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.name),
            source: wgpu::ShaderSource::Wgsl(shader.source.into()),
        });
        Ok(self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(shader.name),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        }))
    }

    /// The only place that maps GPU memory: copies `buffer` to a staging buffer and reads it.
    pub fn read_back<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, size: u64) -> anyhow::Result<Vec<T>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow::anyhow!("GPU poll: {e}"))?;
        rx.recv()?.map_err(|e| anyhow::anyhow!("mapping the staging buffer: {e}"))?;
        let view =
            slice.get_mapped_range().map_err(|e| anyhow::anyhow!("reading the staging buffer: {e:?}"))?;
        let data = bytemuck::cast_slice::<u8, T>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(data)
    }

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

/// The uniform block of shaders/philox.wgsl (`Params`); size checked against the WGSL side.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(shader: &Shader) -> naga::Module {
        naga::front::wgsl::parse_str(shader.source)
            .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)))
    }

    /// Parses and validates a WGSL source with naga, as wgpu would.
    fn validate(source: &str) -> Result<naga::Module, String> {
        let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .map_err(|e| e.emit_to_string(source))?;
        Ok(module)
    }

    /// Every shader in the table the engine loads parses and validates (and the table is not empty).
    #[test]
    fn every_shader_in_the_table_validates() {
        assert!(!SHADERS.is_empty(), "the shader table is empty");
        for shader in SHADERS {
            let module = validate(shader.source).unwrap_or_else(|e| panic!("{}: {e}", shader.name));
            for entry in shader.entries {
                assert!(
                    module.entry_points.iter().any(|e| e.name == *entry),
                    "{}: no entry point {entry}",
                    shader.name,
                );
            }
        }
    }

    /// The validation above can fail: a type error in a shader is caught.
    #[test]
    fn an_invalid_shader_fails_validation() {
        let broken = SHADERS[0].source.replace("let q = gid.x;", "let q = gid.x + 1.0;");
        assert_ne!(broken, SHADERS[0].source);
        assert!(validate(&broken).is_err());
    }

    /// The Rust uniform struct has the size of the WGSL one in the uniform address space.
    #[test]
    fn philox_uniform_matches_the_wgsl_struct() {
        let module = parse(&SHADERS[0]);
        let span = module
            .types
            .iter()
            .find_map(|(_, t)| match (&t.name, &t.inner) {
                (Some(n), naga::TypeInner::Struct { span, .. }) if n == "Params" => Some(*span),
                _ => None,
            })
            .expect("struct Params");
        let uniform_size = span.div_ceil(16) * 16;
        assert_eq!(std::mem::size_of::<PhiloxParams>() as u32, uniform_size);
    }
}
