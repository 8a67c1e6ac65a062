// Batched products Y[b] = X[b] W[b or shared] over the n + 1 rows of a state (the residual rows
// and the mean row), and the Gram matrices R^T R of the metrics.

struct Params {
    rows: u32, inner: u32, cols: u32, batch: u32,
    x_off: u32, x_bs: u32, x_rs: u32, w_bs: u32,
    y_off: u32, y_bs: u32, y_rs: u32, ps: u32,
    // 1: write the pre-composition scalars (g, 0, l) of the input state for compose
    set_pre: u32, _p0: u32, _p1: u32, _p2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> scal: array<f32>;
@group(0) @binding(5) var<storage, read_write> pre: array<f32>;

const T: u32 = 16u;
var<workgroup> xs: array<array<f32, 16>, 16>;
var<workgroup> ws: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.z;
    let row = wg.y * T + lid.y;
    let col = wg.x * T + lid.x;
    let xb = p.x_off + b * p.x_bs;
    let wb = b * p.w_bs;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.inner; k0 += T) {
        let kx = k0 + lid.x;
        var xv = 0.0;
        if (row < p.rows && kx < p.inner) { xv = x[xb + row * p.x_rs + kx]; }
        xs[lid.y][lid.x] = xv;
        let kw = k0 + lid.y;
        var wv = 0.0;
        if (kw < p.inner && col < p.cols) { wv = w[wb + kw * p.cols + col]; }
        ws[lid.y][lid.x] = wv;
        workgroupBarrier();
        for (var k = 0u; k < T; k++) { acc += xs[lid.y][k] * ws[k][lid.x]; }
        workgroupBarrier();
    }
    if (row < p.rows && col < p.cols) { y[p.y_off + b * p.y_bs + row * p.y_rs + col] = acc; }
    if (p.set_pre == 1u && row == 0u && col == 0u) {
        pre[b * p.ps] = scal[b * 4u];
        pre[b * p.ps + 1u] = 0.0;
        pre[b * p.ps + 2u] = scal[b * 4u + 1u];
    }
}

// C[b] = R^T R over the n residual rows (d x d): one output per invocation.
@compute @workgroup_size(16, 16)
fn gram(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.z;
    let j = wg.y * T + lid.y;
    let k = wg.x * T + lid.x;
    let d = p.cols;
    let xb = b * p.x_bs;
    // Compensated over tiles: the sum runs over every token (n up to the long contexts).
    var acc = 0.0;
    var comp = 0.0;
    for (var i0 = 0u; i0 < p.rows; i0 += T) {
        let i = i0 + lid.x;
        var a = 0.0;
        if (i < p.rows && wg.y * T + lid.y < d) { a = x[xb + i * d + wg.y * T + lid.y]; }
        xs[lid.y][lid.x] = a;
        let i2 = i0 + lid.y;
        var c = 0.0;
        if (i2 < p.rows && k < d) { c = x[xb + i2 * d + k]; }
        ws[lid.y][lid.x] = c;
        workgroupBarrier();
        var part = 0.0;
        for (var t = 0u; t < T; t++) { part += xs[lid.y][t] * ws[t][lid.x]; }
        kahan_add(&acc, &comp, part);
        workgroupBarrier();
    }
    if (j < d && k < d) { y[b * d * d + j * d + k] = acc; }
}
