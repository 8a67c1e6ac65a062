// The raw Philox4x32-10 words (philox() is in common.wgsl), for the known-answer test.
struct Params { key0: u32, key1: u32, sequence: u32, stream: u32, count: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = gid.x;
    if (q >= params.count) { return; }
    out[q] = philox(vec4<u32>(q, 0u, params.sequence, params.stream), vec2<u32>(params.key0, params.key1));
}
