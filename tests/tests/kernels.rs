//! Which matrix-multiplication kernels tract selects on this CPU, printed for
//! the record (run with `--nocapture`; under qemu, `QEMU_CPU` decides what the
//! CPU reports) and checked to be the architecture's own, not the portable
//! fallback, wherever the architecture has kernels.

use tract_core::prelude::DatumType;
use tract_linalg::isa;
use tract_linalg::mmm::{MmmDispatch, Query};

/// (m, k, n) of products the emoji model runs: a 3x3 convolution at 16x16,
/// one at 4x4, and the 320 -> 512 projection of its head.
const SHAPES: &[(usize, usize, usize)] = &[(96, 864, 256), (320, 2880, 16), (512, 320, 1)];

#[test]
fn tract_picks_native_kernels_and_reports_them() {
    let native = isa::native();
    let dispatch = MmmDispatch::native();
    println!("cpu: {native:?} (tract calls it '{}')", native.nickname());
    let tiers: Vec<&str> = dispatch.tiers().iter().map(|t| t.name).collect();
    println!("dispatch tiers: {}", tiers.join(" > "));
    for acc in [DatumType::F32, DatumType::F16, DatumType::I32] {
        for &(m, k, n) in SHAPES {
            let picked = dispatch.pick(&Query::plain(acc, Some(m), Some(k), Some(n)));
            let name = picked.as_ref().map(|(mmm, _, _)| mmm.name().to_string());
            println!("{acc:?} accumulator, m={m} k={k} n={n}: {}", name.as_deref().unwrap_or("(none)"));
            if acc == DatumType::F32 {
                let name = name.expect("an f32 kernel always exists");
                let arch_specific = !name.starts_with("generic");
                if cfg!(any(target_arch = "aarch64", target_arch = "x86_64")) {
                    assert!(arch_specific, "tract fell back to the portable kernel {name} on {native:?}");
                }
                if cfg!(target_arch = "arm") {
                    // Every Pi from the 2 on has NEON; armvfpv2 and generic are the fallbacks.
                    assert!(
                        name.starts_with("armv7neon"),
                        "tract fell back to {name} on {native:?}: no NEON found \
                         (under qemu-user, /proc/cpuinfo is the host's: set TRACT_CPU_ARM32_NEON=true)"
                    );
                }
            }
        }
    }
}

/// The emoji model's int8-compute form in the plan itself: its int8
/// products run on the architecture's int8 kernel, the dot-product one
/// wherever the CPU has it (x86 VNNI, aarch64 `sdot` on a Cortex-A76) and the
/// plain SIMD one otherwise (a Cortex-A72 has no `sdot`; 32-bit ARM has only
/// the NEON one).
#[test]
fn int8_compute_uses_the_cpus_int8_kernels() {
    use clip_edge_runtime::{Bundle, ImageEncoder, Precision};
    use tract_linalg::isa::Isa;
    let bundle = Bundle::load(clip_edge_tests::repo_root().join("models/emoji")).expect("bundle");
    let encoder = ImageEncoder::load(&bundle, Some(Precision::Int8Compute)).expect("int8-compute");
    let int8: Vec<String> = encoder
        .matmul_kernels()
        .into_iter()
        .filter(|(_, acc)| *acc == DatumType::I32)
        .map(|(n, _)| n)
        .collect();
    let native = isa::native();
    println!("int8-compute kernels on {native:?}: {int8:?}");
    assert!(!int8.is_empty(), "no int8 kernel in the int8-compute plan");
    if cfg!(target_arch = "aarch64") {
        // The 64x1 kernel serves single-column products (the head's linear
        // layers) on either core; every tiled one must follow the CPU.
        let dot = native.has(Isa::Aarch64DotProd);
        assert!(int8.iter().all(|k| k.starts_with("arm64")), "not all aarch64 kernels: {int8:?}");
        let tiled: Vec<&String> = int8.iter().filter(|k| !k.contains("64x1")).collect();
        assert!(!tiled.is_empty(), "no tiled int8 kernel: {int8:?}");
        for k in tiled {
            assert_eq!(k.contains("dot"), dot, "{k}: the CPU {} sdot", if dot { "has" } else { "has no" });
        }
    } else if cfg!(target_arch = "arm") {
        for k in &int8 {
            assert!(k.starts_with("armv7neon_mmm_i32"), "{k}: not tract's armv7 NEON int8 kernel");
        }
    } else if cfg!(target_arch = "x86_64") {
        let vnni = native.has(Isa::X86_64Avx512Vnni) || native.has(Isa::X86_64AvxVnni);
        // Sapphire Rapids and later: tract takes its AMX int8 tile kernel
        // for some products (seen on a Xeon with AMX-INT8), VNNI for the rest.
        let amx = native.has(Isa::X86_64AmxInt8);
        for k in &int8 {
            assert!(!k.starts_with("generic"), "{k}: the portable fallback");
            if amx && k.contains("amx") {
                continue;
            }
            assert_eq!(k.contains("vnni"), vnni, "{k}: the CPU {} VNNI", if vnni { "has" } else { "has no" });
        }
    }
}
