// Weights and inputs from the counter-based generator: nothing large crosses the bus, and the
// numbers are those of the CPU engine (rng::GaussianBlock), up to f32 rounding.

struct Params {
    key0: u32, key1: u32, stream: u32, seq_base: u32,
    shared_seq: u32, rows: u32, cols: u32, batch: u32,
    // 0: gaussian * scale, 1: scale * identity
    mode: u32, scale: f32, out_offset: u32, _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

// Element (i, j) of matrix b (of `batch`): normal i * cols + j of its block; the block's
// sequence is `seq_base + b`, or `seq_base` for every b when `shared_seq` is set.
@compute @workgroup_size(64)
fn weights(@builtin(global_invocation_id) gid: vec3<u32>) {
    let count = p.rows * p.cols;
    let e = gid.x + gid.y * 65535u * 64u;
    let b = gid.z;
    if (e >= count || b >= p.batch) { return; }
    var v = 0.0;
    if (p.mode == 0u) {
        var seq = p.seq_base + b;
        if (p.shared_seq != 0u) { seq = p.seq_base; }
        v = p.scale * normal_at(vec2<u32>(p.key0, p.key1), p.stream, seq, e);
    } else if (e / p.cols == e % p.cols) {
        v = p.scale;
    }
    out[p.out_offset + b * count + e] = v;
}

struct InputParams {
    key0: u32, key1: u32, stream: u32, shared_stream: u32,
    seq_base: u32, n: u32, d: u32, batch: u32,
    // 0: gaussian, 1: sphere, 2: shared (rho)
    family: u32, rho: f32, ps: u32, _pad: u32,
}
@group(0) @binding(0) var<uniform> q: InputParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> pre: array<f32>;

// Row i < n of sequence b: the input tokens; row n (the mean row) is zero, composed later.
@compute @workgroup_size(64)
fn inputs(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let b = gid.z;
    if (i > q.n || b >= q.batch) { return; }
    let base = b * (q.n + 1u) * q.d + i * q.d;
    let key = vec2<u32>(q.key0, q.key1);
    let seq = q.seq_base + b;
    if (i == q.n) {
        for (var j = 0u; j < q.d; j++) { x[base + j] = 0.0; }
        pre[b * q.ps] = 0.0;
        pre[b * q.ps + 1u] = NEG;
        pre[b * q.ps + 2u] = 0.0;
        return;
    }
    var norm2 = 0.0;
    for (var j = 0u; j < q.d; j++) {
        let z = normal_at(key, q.stream, seq, i * q.d + j);
        norm2 += z * z;
    }
    let a = sqrt(1.0 - q.rho);
    let c = sqrt(q.rho);
    for (var j = 0u; j < q.d; j++) {
        var z = normal_at(key, q.stream, seq, i * q.d + j);
        if (q.family == 1u) {
            z = z / sqrt(norm2);
        } else if (q.family == 2u) {
            z = a * z + c * normal_at(key, q.shared_stream, seq, j);
        }
        x[base + j] = z;
    }
}
