//! GPU kernels on a real adapter (lavapipe in CI) against their CPU twins. Without an adapter
//! these tests fail when RANKCOLLAPSE_REQUIRE_GPU is set (CI sets it) and skip loudly otherwise.

use rankcollapse::engine::gpu::GpuContext;
use rankcollapse::rng::{philox4x32_10, Purpose, Stream};

fn context() -> Option<GpuContext> {
    match GpuContext::new(None) {
        Ok(c) => Some(c),
        Err(e) if std::env::var_os("RANKCOLLAPSE_REQUIRE_GPU").is_some() => {
            panic!("RANKCOLLAPSE_REQUIRE_GPU is set but there is no GPU adapter: {e:#}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: no GPU adapter ({e:#}); set RANKCOLLAPSE_REQUIRE_GPU=1 to make this a failure"
            );
            None
        }
    }
}

#[test]
fn philox_on_the_gpu_matches_the_cpu_generator() {
    let Some(ctx) = context() else { return };
    println!("adapter: {} ({:?})", ctx.info.name, ctx.info.backend);
    let cases = [
        (0u64, Stream::new(Purpose::Input, 0, 0).0, 0u32, 1u32),
        (12345, Stream::new(Purpose::Query, 3, 1).0, 7, 63),
        (u64::MAX, Stream::new(Purpose::Markov, 1023, 255).0, u32::MAX, 65),
        (0x243f_6a88_85a3_08d3, 0xdead_beef, 42, 1000),
    ];
    for (seed, stream, sequence, count) in cases {
        let gpu = ctx.philox_blocks(seed, stream, sequence, count).unwrap();
        assert_eq!(gpu.len(), count as usize);
        for (q, words) in gpu.iter().enumerate() {
            let cpu = philox4x32_10([q as u32, 0, sequence, stream], [seed as u32, (seed >> 32) as u32]);
            assert_eq!(*words, cpu, "seed {seed} stream {stream:#x} sequence {sequence} block {q}");
        }
    }
}

#[test]
fn devices_lists_the_adapter() {
    let Some(ctx) = context() else { return };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rankcollapse")).arg("devices").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("[0]") && text.contains(&ctx.info.name) && text.contains("max storage binding"),
        "{text}"
    );
}
