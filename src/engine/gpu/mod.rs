//! The GPU side (wgpu 30, any backend): adapter enumeration and choice, the device context, the
//! shader table, and the one read-back path. The engine lives in the submodules: one per WGSL
//! family (its uniform block and the `Chunk` methods that drive it), plus the chunk, the fit
//! checks, the run loop and the twin-test API.

pub mod activation;
pub mod attention;
pub mod check;
pub mod chunk;
pub mod fit;
pub mod generate;
pub mod linear;
pub mod metrics;
pub mod norm;
pub mod philox;
pub mod profile;
pub mod run;
pub mod state;
pub mod twin;

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

/// The adapter selector: `--adapter` when given, else WGPU_ADAPTER_NAME.
pub fn adapter_selector(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string).or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
}

/// Which adapter a run uses, and why.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AdapterChoice {
    /// The one the selector names.
    Selected(usize),
    /// No selector: the first hardware adapter.
    Hardware(usize),
    /// No selector and no hardware adapter: the first adapter (a software one).
    Software(usize),
}

impl AdapterChoice {
    /// The chosen adapter's index in the list.
    pub fn index(self) -> usize {
        match self {
            AdapterChoice::Selected(i) | AdapterChoice::Hardware(i) | AdapterChoice::Software(i) => i,
        }
    }
}

/// The adapter rule, the one both the GPU engine and `auto` follow: the adapter of `list` whose
/// index or name (a case-insensitive substring) `selector` gives, else the first hardware
/// adapter, else the first adapter. `Err` when the selector matches none or the list is empty.
pub fn choose_adapter(list: &[wgpu::AdapterInfo], selector: Option<&str>) -> anyhow::Result<AdapterChoice> {
    match selector {
        // An index is an index (adapter names hold digits too), else a name substring.
        Some(s) => match s.trim().parse::<usize>() {
            Ok(i) if i < list.len() => Ok(AdapterChoice::Selected(i)),
            Ok(i) => anyhow::bail!("no GPU adapter has index {i} (see rankcollapse devices)"),
            Err(_) => list
                .iter()
                .position(|a| a.name.to_lowercase().contains(&s.to_lowercase()))
                .map(AdapterChoice::Selected)
                .ok_or_else(|| anyhow::anyhow!("no GPU adapter matches {s:?} (see rankcollapse devices)")),
        },
        None => match list.iter().position(is_hardware) {
            Some(i) => Ok(AdapterChoice::Hardware(i)),
            None if list.is_empty() => anyhow::bail!("no GPU adapter found"),
            None => Ok(AdapterChoice::Software(0)),
        },
    }
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

/// A lost GPU device ([`GpuContext::check`]): `sweep run`'s GPU workers find it in an engine
/// error's chain and stop (their point goes to the others) rather than fail the point.
#[derive(Debug, thiserror::Error)]
#[error("the GPU device on {adapter} was lost ({why})")]
pub struct DeviceLost {
    pub adapter: String,
    pub why: String,
}

/// Whether an engine error says, anywhere in its chain, that the GPU device was lost.
pub fn is_device_lost(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<DeviceLost>())
}

/// Test hook: `RANKCOLLAPSE_TEST_LOSE_DEVICE=K` destroys the K-th device this process creates
/// (counting from 1) in the middle of its first chunk (after the first layer's work has been
/// submitted), so that the lost-device path runs for real. With several `sweep run` GPU workers
/// the count runs over all of them, so exactly one worker loses its device.
pub const LOSE_DEVICE_HOOK: &str = "RANKCOLLAPSE_TEST_LOSE_DEVICE";
static DEVICES_CREATED: AtomicUsize = AtomicUsize::new(0);

impl GpuContext {
    /// A device on the adapter [`choose_adapter`] picks for `selector` (`--adapter`).
    pub fn new(selector: Option<&str>) -> anyhow::Result<GpuContext> {
        let instance = instance();
        let all = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let infos: Vec<wgpu::AdapterInfo> = all.iter().map(|a| a.get_info()).collect();
        let index = choose_adapter(&infos, adapter_selector(selector).as_deref())?.index();
        let adapter = all.into_iter().nth(index).expect("choose_adapter returns an index of the list");
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
            return Err(DeviceLost { adapter: self.info.name.clone(), why }.into());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses and validates a WGSL source with naga, as wgpu would.
    fn validate(source: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
        let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .map_err(|e| e.emit_to_string(source))?;
        Ok((module, info))
    }

    /// Every shader in the table the engine loads parses and validates (and the table is not empty).
    #[test]
    fn every_shader_in_the_table_validates() {
        assert!(!SHADERS.is_empty(), "the shader table is empty");
        for shader in SHADERS {
            let (module, _) = validate(shader.source).unwrap_or_else(|e| panic!("{}: {e}", shader.name));
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

    /// A Rust uniform struct's layout: its name, size and (field, offset) in declaration order.
    struct RustLayout {
        name: &'static str,
        size: usize,
        fields: Vec<(&'static str, usize)>,
    }

    macro_rules! layout {
        ($t:ty, [$($field:ident),* $(,)?]) => {
            RustLayout {
                name: stringify!($t),
                size: std::mem::size_of::<$t>(),
                fields: vec![$((stringify!($field), std::mem::offset_of!($t, $field))),*],
            }
        };
    }

    /// The Rust struct each entry point's uniform block is filled from, every field listed.
    fn rust_uniform(shader: &str, entry: &str) -> RustLayout {
        use super::{activation::*, attention::*, check::*, generate::*, linear::*, metrics::*};
        use super::{norm::*, philox::*, state::*};
        match (shader, entry) {
            ("philox", "main") => layout!(PhiloxParams, [key0, key1, sequence, stream, count, _pad]),
            ("generate", "weights") => layout!(
                WeightParams,
                [key0, key1, stream, seq_base, shared_seq, rows, cols, batch, mode, scale, out_offset, _pad]
            ),
            ("generate", "inputs") => layout!(
                InputParams,
                [key0, key1, stream, shared_stream, seq_base, n, d, batch, family, rho, ps, _pad]
            ),
            ("linear", "matmul" | "gram") => layout!(
                LinearParams,
                [
                    rows, inner, cols, batch, x_off, x_bs, x_rs, w_bs, y_off, y_bs, y_rs, ps, set_pre, _p0,
                    _p1, _p2
                ]
            ),
            ("state", "compose") => layout!(ComposeParams, [n, w, batch, ps, blocks, block_w, _p0, _p1]),
            ("state", "skip") => layout!(SkipParams, [n, w, batch, ps, a, b, _p0, _p1]),
            ("attention", "prep" | "argmax_rows" | "onehot" | "attend" | "dense") => layout!(
                AttentionParams,
                [
                    n, r, dv, batch, mask, window, kind, remove, head, heads, ps, tau, key0, key1, stream,
                    seq_base, shared_seq, rowconst, _p0, _p1
                ]
            ),
            ("norm", "normalise") => layout!(NormParams, [n, d, batch, ps, kind, eps, gain, bias]),
            ("activation", "activate") => layout!(ActivationParams, [n, w, batch, ps, kind, _p0, _p1, _p2]),
            ("metrics", "cosines" | "metrics") => {
                layout!(MetricsParams, [n, d, batch, tiles, layer, layers, has_attn, cut_hook])
            }
            ("check", "check") => {
                layout!(CheckParams, [n, w, code, underflow_code, stride, count, _p0, _p1])
            }
            _ => panic!("{shader}/{entry}: no Rust uniform struct listed for its uniform block"),
        }
    }

    /// Compares `rust` with naga's layout of the uniform block that `entry` of `shader` reads:
    /// the same members by name and offset, then only padding, and the size of the WGSL struct
    /// rounded up to a uniform's 16-byte alignment (the binding must be at least that).
    fn compare_uniform(shader: &Shader, entry: &str, rust: &RustLayout) -> Result<(), String> {
        let (module, info) = validate(shader.source)?;
        let index = module.entry_points.iter().position(|e| e.name == entry).ok_or("no such entry")?;
        let uses = info.get_entry_point(index);
        let uniforms: Vec<_> = module
            .global_variables
            .iter()
            .filter(|(h, g)| g.space == naga::AddressSpace::Uniform && !uses[*h].is_empty())
            .collect();
        let [(_, global)] = uniforms[..] else {
            return Err(format!("{} uniform blocks read, not one", uniforms.len()));
        };
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).map_err(|e| e.to_string())?;
        let ty = &module.types[global.ty];
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            return Err("the uniform block is not a struct".into());
        };
        let struct_name = ty.name.as_deref().unwrap_or("?");
        let wgsl_size = layouter[global.ty].size;
        assert_eq!(wgsl_size, *span, "{struct_name}: naga's span and its layout disagree");
        let size = naga::proc::Alignment::MIN_UNIFORM.round_up(wgsl_size) as usize;
        if rust.size != size {
            return Err(format!("{} is {} bytes, {struct_name} {size}", rust.name, rust.size));
        }
        for (i, m) in members.iter().enumerate() {
            let wgsl = (m.name.as_deref().unwrap_or("?"), m.offset as usize);
            if rust.fields.get(i) != Some(&wgsl) {
                return Err(format!(
                    "{struct_name} member {i} is {wgsl:?}, {} has {:?}",
                    rust.name,
                    rust.fields.get(i)
                ));
            }
        }
        for (name, offset) in &rust.fields[members.len()..] {
            if !name.starts_with('_') || *offset < *span as usize {
                return Err(format!("{}.{name} at {offset} is not padding after {struct_name}", rust.name));
            }
        }
        Ok(())
    }

    /// Every entry point's uniform block is filled from a Rust struct with the WGSL struct's
    /// members, names and offsets (naga's reflection), and its size.
    #[test]
    fn every_uniform_struct_matches_its_wgsl_block() {
        for shader in SHADERS {
            for entry in shader.entries {
                let rust = rust_uniform(shader.name, entry);
                compare_uniform(shader, entry, &rust)
                    .unwrap_or_else(|e| panic!("{}/{entry}: {e}", shader.name));
            }
        }
    }

    /// The check above can fail: two fields swapped in the Rust struct are caught.
    #[test]
    fn a_swapped_uniform_field_fails_the_layout_check() {
        #[repr(C)]
        struct SwappedSkip {
            n: u32,
            w: u32,
            batch: u32,
            ps: u32,
            b: f32,
            a: f32,
            _p0: u32,
            _p1: u32,
        }
        let state = SHADERS.iter().find(|s| s.name == "state").unwrap();
        let swapped = layout!(SwappedSkip, [n, w, batch, ps, a, b, _p0, _p1]);
        assert!(compare_uniform(state, "skip", &swapped).is_err());
        let right = rust_uniform("state", "skip");
        assert_eq!(compare_uniform(state, "skip", &right), Ok(()));
    }
}
