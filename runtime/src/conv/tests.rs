// Where the kernel has no SIMD build (armv7) only the rewrite's own test runs.
#![cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]

use super::*;

/// `(cout, cin, h, w, kh, kw, stride, pad)`.
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

const CASES: [Case; 26] = [
    (24, 3, 17, 19, 3, 3, 1, 1),
    (48, 24, 16, 16, 3, 3, 2, 1),
    (5, 7, 9, 11, 3, 3, 1, 1),
    (50, 4, 8, 8, 3, 3, 2, 1),
    (33, 2, 4, 4, 3, 3, 1, 1),
    (16, 3, 13, 10, 5, 5, 2, 2),
    (7, 2, 6, 9, 1, 3, 1, 0),
    (9, 3, 7, 7, 3, 1, 2, 0),
    (12, 5, 1, 1, 3, 3, 1, 1),
    (64, 16, 3, 5, 3, 3, 1, 0),
    (20, 6, 12, 12, 7, 7, 1, 3),
    (3, 2, 11, 10, 3, 3, 3, 1),
    // The image past the last window (its bottom rows and right columns unread).
    (10, 3, 8, 8, 3, 3, 2, 0),
    // A stride wider than the kernel.
    (6, 2, 11, 13, 2, 2, 3, 0),
    // Several blocks and several groups of flat runs at every vector width.
    (100, 8, 20, 20, 3, 3, 1, 1),
    // Tiles along the output rows where the tile (`R` outputs) divides the
    // row: 8 (AVX-512's R = 8), 24 (R = 12 at every width), 24 at stride 2
    // (R = 12 on x86, 8 on NEON).
    (48, 16, 8, 8, 3, 3, 1, 1),
    (40, 8, 5, 24, 3, 3, 1, 1),
    (24, 9, 48, 48, 3, 3, 2, 1),
    // ... and with a partial last tile per row: 23 of 24 (R = 24 with one
    // vector of channels on AVX-512 and NEON), 11 of 12 (R = 6 on AVX2 and NEON).
    (16, 8, 10, 23, 3, 3, 1, 1),
    (48, 8, 6, 11, 3, 3, 1, 1),
    // Stride 2 over an odd width with an even left padding (both column
    // phases written in one pass, the last value alone).
    (8, 4, 9, 11, 3, 3, 2, 2),
    // A strided 1x1 convolution: only the first phase is read.
    (48, 24, 16, 15, 1, 1, 2, 0),
    // Several bands (for 2 threads and more) at stride 3, at 5x5 stride 2,
    // and with a padding wider than the kernel: bands that read only padding.
    (8, 4, 40, 40, 5, 5, 3, 2),
    (16, 3, 30, 30, 5, 5, 2, 2),
    (8, 4, 6, 6, 3, 3, 1, 5),
    // A zero-width image with padding: one output column of padding alone.
    (4, 2, 3, 0, 2, 2, 1, 1),
];

/// The convolution written out directly; bias `0.25 * channel`.
fn reference(x: &[f32], k: &[f32], (cout, cin, h, w, kh, kw, stride, pad): Case) -> Vec<f32> {
    let oh = (h + 2 * pad - kh) / stride + 1;
    let ow = (w + 2 * pad - kw) / stride + 1;
    reference_padded(x, k, (cout, cin, h, w, kh, kw, stride), [pad, pad], [oh, ow])
}

/// [`reference`] with `[top, left]` padding and an `[oh, ow]` output.
fn reference_padded(
    x: &[f32],
    k: &[f32],
    (cout, cin, h, w, kh, kw, stride): (usize, usize, usize, usize, usize, usize, usize),
    [top, left]: [usize; 2],
    [oh, ow]: [usize; 2],
) -> Vec<f32> {
    let mut y = vec![0f32; cout * oh * ow];
    for oc in 0..cout {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = 0.25 * oc as f32;
                for ic in 0..cin {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as isize - top as isize;
                            let ix = (ox * stride + kx) as isize - left as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                s += k[((oc * cin + ic) * kh + ky) * kw + kx]
                                    * x[(ic * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                }
                y[(oc * oh + oy) * ow + ox] = s;
            }
        }
    }
    y
}

/// The op of `case` packed in blocks of `block` channels, with deterministic
/// input `x` and kernel `k`.
fn fixture(case: Case, block: usize, has_n: bool) -> (DirectConv, Vec<f32>, Vec<f32>) {
    let (cout, cin, h, w, kh, kw, stride, pad) = case;
    let x: Vec<f32> = (0..cin * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    let k: Vec<f32> = (0..cout * cin * kh * kw).map(|i| ((i * 13 % 29) as f32 - 14.0) / 10.0).collect();
    let bias: Vec<f32> = (0..cout).map(|c| 0.25 * c as f32).collect();
    let padding = PaddingSpec::ExplicitOnnxPool(tvec![pad, pad], tvec![pad, pad], false);
    let op =
        DirectConv::new(&k, &bias, [cout, cin, kh, kw], [stride, stride], padding, has_n, block).expect("op");
    (op, x, k)
}

/// The largest |a - b|, relative to the largest |b| (at least 1).
fn relative_difference(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale
}

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn matches_the_direct_convolution() {
    for (i, case) in CASES.into_iter().enumerate() {
        let (cout, cin, h, w, ..) = case;
        let block = host_block(cout).expect("a host with SIMD");
        let has_n = i % 2 == 0;
        let (op, x, k) = fixture(case, block, has_n);
        let shape: &[usize] = if has_n { &[1, cin, h, w] } else { &[cin, h, w] };
        let input = Tensor::from_shape(shape, &x).expect("x");
        let y = op.eval(&EvalContext::out_of_plan(), tvec![input.into_tvalue()]).expect("eval");
        let got: Vec<f32> = y[0].to_plain_array_view::<f32>().expect("y").iter().copied().collect();
        let want = reference(&x, &k, case);
        assert_eq!(got.len(), want.len(), "{case:?}: shape");
        assert_eq!(y[0].shape().len(), shape.len(), "{case:?}: rank");
        assert_eq!(y[0].shape()[shape.len() - 3], cout, "{case:?}: channels");
        let worst = relative_difference(&got, &want);
        assert!(worst < 1e-5, "{case:?}: max relative |d| {worst}");
    }
}

/// Each build of the kernel this host can run (AVX2 + FMA and AVX-512 on
/// x86, NEON on aarch64), whatever the dispatcher would pick.
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn every_vector_width_matches() {
    let mut widths = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(simd) = pulp::x86::V3::try_new() {
            check_with(simd);
            widths += 1;
        }
        if let Some(simd) = pulp::x86::V4::try_new() {
            check_with(simd);
            widths += 1;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if let Some(simd) = pulp::aarch64::Neon::try_new() {
            check_with(simd);
            widths += 1;
        }
    }
    assert!(widths > 0, "no SIMD build of the kernel runs on this CPU");
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn check_with<S: pulp::Simd>(simd: S) {
    for case in CASES {
        let block = direct::block(S::F32_LANES, case.0).expect("a kernel for this width");
        let (op, x, k) = fixture(case, block, true);
        let g = op.geometry(case.2, case.3);
        let want = reference(&x, &k, case);
        let run = |op: &DirectConv, residual: Option<&[f32]>, threads: usize| {
            let mut y = vec![0.0; want.len()];
            pulp::WithSimd::with_simd(
                direct::Direct { conv: op, g: &g, x: &x, residual, y: &mut y, threads },
                simd,
            )
            .expect("kernel");
            y
        };
        let got = run(&op, None, 1);
        let worst = relative_difference(&got, &want);
        assert!(worst < 1e-5, "{} lanes {case:?}: max relative |d| {worst}", S::F32_LANES);
        // Cut into bands and runs of blocks for more threads (run one after
        // the other here, outside a pool): each output sums the same taps in
        // the same order, so the same bits.
        for threads in [2, 3, 4, 8] {
            assert!(
                run(&op, None, threads) == got,
                "{} lanes {case:?}: {threads} threads' cut differs",
                S::F32_LANES
            );
        }
        // A residual folded in, then a ReLU: each band adds its own rows.
        let residual: Vec<f32> = (0..got.len()).map(|i| ((i * 11 % 41) as f32 - 20.0) / 10.0).collect();
        let with = DirectConv { residual: true, relu: true, ..op.clone() };
        let want: Vec<f32> = got.iter().zip(&residual).map(|(y, r)| (y + r).max(0.0)).collect();
        for threads in [1, 4] {
            assert!(
                run(&with, Some(&residual), threads) == want,
                "{} lanes {case:?}: residual and ReLU, {threads} threads",
                S::F32_LANES
            );
        }
    }
}

/// The cut for threads: one item on one thread, else bands of at least
/// four rows first (as many as divide the threads), runs of blocks where
/// the plane has too few rows, one item a thread, never more bands than
/// rows or runs than blocks.
#[test]
fn the_cut_takes_bands_then_blocks() {
    use direct::Split;
    let cut = |oh, blocks, threads| {
        let s = Split::new(oh, blocks, threads);
        (s.bands, s.chunks)
    };
    assert_eq!(cut(64, 3, 1), (1, 1));
    assert_eq!(cut(32, 1, 2), (2, 1));
    assert_eq!(cut(16, 2, 2), (2, 1));
    assert_eq!(cut(8, 4, 2), (2, 1));
    assert_eq!(cut(4, 7, 2), (1, 2));
    assert_eq!(cut(4, 7, 4), (1, 4));
    assert_eq!(cut(4, 3, 8), (1, 3));
    assert_eq!(cut(8, 2, 3), (1, 2));
    assert_eq!(cut(12, 6, 3), (3, 1));
    assert_eq!(cut(8, 6, 6), (2, 3));
    assert_eq!(cut(64, 3, 4), (4, 1));
    assert_eq!(cut(1, 1, 2), (1, 1));
    assert_eq!(cut(0, 0, 2), (1, 1));
}

/// The residual operand's shape, the floor of a `max` after the `Add` (if
/// any), and what the rewrite gives: residual folded, ReLU folded, binary
/// nodes left.
type ResidualCase = ([usize; 4], Option<f32>, (bool, bool, usize));

/// A residual `Add` after the op (the operand of the output's shape), with
/// or without a ReLU after it, is folded in; a `max(y, 1)` after it stays,
/// and so does an `Add` of a per-channel operand (a broadcast, not a
/// residual); outputs as tract's.
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn the_rewrite_folds_a_residual_add() {
    let (cout, cin, side) = (40, 9, 12);
    let x: Vec<f32> = (0..cin * side * side).map(|i| ((i * 31 % 97) as f32 - 48.0) / 30.0).collect();
    let input = Tensor::from_shape(&[1, cin, side, side], &x).expect("x");
    let residual: Vec<f32> = (0..cout * 36).map(|i| ((i * 17 % 53) as f32 - 26.0) / 10.0).collect();
    let cases: [ResidualCase; 4] = [
        ([1, cout, 6, 6], Some(0.0), (true, true, 0)),
        ([1, cout, 6, 6], None, (true, false, 0)),
        ([1, cout, 6, 6], Some(1.0), (true, false, 1)),
        ([1, cout, 1, 1], Some(0.0), (false, false, 2)),
    ];
    for (shape, floor, (folded, relu, left)) in cases {
        let build = || -> TractResult<TypedModel> {
            let mut model = dense_model(cout, cin, side)?;
            let y = model.output_outlets()?[0];
            let len = shape.iter().product::<usize>();
            let r = model.add_const("r", Tensor::from_shape(&shape, &residual[..len])?)?;
            let mut out = model.wire_node("add", math::add(), &[y, r])?;
            if let Some(floor) = floor {
                let floor = model.add_const("floor", Tensor::from_shape(&[1, 1, 1, 1], &[floor])?)?;
                out = model.wire_node("relu", math::max(), &[out[0], floor])?;
            }
            model.select_output_outlets(&out)?;
            Ok(model)
        };
        let mut ours = build().expect("model");
        assert_eq!(rewrite(&mut ours).expect("rewrite"), 1);
        let conv = ours.nodes().iter().find_map(|n| n.op_as::<DirectConv>()).expect("the op");
        assert_eq!((conv.residual, conv.relu), (folded, relu), "{shape:?} {floor:?}");
        let binary = ours.nodes().iter().filter(|n| n.op_is::<TypedBinOp>()).count();
        assert_eq!(binary, left, "{shape:?} {floor:?}");
        same_output(ours, tract_output(build().expect("model"), &input), &input);
    }
}

/// Weights packed for another vector width are an error, not a wrong answer.
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn a_block_for_another_width_is_an_error() {
    let block = host_block(CASES[0].0).expect("a host with SIMD");
    // One channel more than the host's block: no kernel of any width takes it.
    let (op, x, _) = fixture(CASES[0], block + 1, true);
    let input = Tensor::from_shape(&[1, 3, 17, 19], &x).expect("x");
    let err = op.eval(&EvalContext::out_of_plan(), tvec![input.into_tvalue()]).expect_err("block");
    assert!(format!("{err:#}").contains("packed for"), "{err:#}");
}

/// A model of one dense 3x3 convolution (stride 2, padding 1, bias 0.5) of a
/// `[1, cin, side, side]` input.
fn dense_model(cout: usize, cin: usize, side: usize) -> TractResult<TypedModel> {
    conv_model(cout, cin, side, 3)
}

/// A model of one dense `k x k` convolution (stride 2, padding `k / 2`, bias
/// 0.5) of a `[1, cin, side, side]` input.
fn conv_model(cout: usize, cin: usize, side: usize, k: usize) -> TractResult<TypedModel> {
    batch_conv_model(1, cout, cin, side, k)
}

/// [`conv_model`] over a batch of `n` images.
fn batch_conv_model(n: usize, cout: usize, cin: usize, side: usize, k: usize) -> TractResult<TypedModel> {
    use tract_core::ops::cnn::{KernelFormat, PoolSpec};
    use tract_core::ops::nn::DataFormat;
    let taps = cout * cin * k * k;
    let weights: Vec<f32> = (0..taps).map(|i| ((i * 7 % 23) as f32 - 11.0) / 20.0).collect();
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([n, cin, side, side]))?;
    let kernel = model.add_const("kernel", Tensor::from_shape(&[cout, cin, k, k], &weights)?)?;
    let bias = model.add_const("bias", tensor1(&vec![0.5f32; cout]))?;
    let op = Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![k, k],
            padding: PaddingSpec::Explicit(tvec![k / 2, k / 2], tvec![k / 2, k / 2]),
            dilations: None,
            strides: Some(tvec![2, 2]),
            input_channels: cin,
            output_channels: cout,
        },
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let y = model.wire_node("conv", op, &[x, kernel, bias])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

/// The rewrite takes a dense convolution exactly where the kernel has a SIMD
/// build for the host (x86 with AVX2 + FMA, aarch64); elsewhere (armv7, older
/// x86) tract keeps it.
#[test]
fn the_rewrite_follows_the_host_simd() {
    let simd = host_block(40).is_some();
    if cfg!(not(any(target_arch = "x86_64", target_arch = "aarch64"))) {
        assert!(!simd, "no SIMD build of the kernel on this target");
    }
    let mut model = dense_model(40, 9, 12).expect("model");
    assert_eq!(rewrite(&mut model).expect("rewrite"), usize::from(simd));
}

/// Through tract: a model with a dense 3x3 convolution gives the same output
/// with the rewrite as without, and the rewrite takes it (on a 3-channel
/// input too, but not with a 5x5 kernel there, which stays tract's).
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn the_rewrite_takes_a_dense_convolution() {
    let (cout, cin, side) = (40, 9, 12);
    let build = |cin: usize| dense_model(cout, cin, side);
    let x: Vec<f32> = (0..cin * side * side).map(|i| ((i * 31 % 97) as f32 - 48.0) / 30.0).collect();
    let input = Tensor::from_shape(&[1, cin, side, side], &x).expect("x");
    let mut stem = build(3).expect("model");
    assert_eq!(rewrite(&mut stem).expect("rewrite"), 1, "a 3x3 stem is the op's");
    let pixels = Tensor::from_shape(&[1, 3, side, side], &x[..3 * side * side]).expect("x");
    same_output(stem, tract_output(build(3).expect("model"), &pixels), &pixels);
    let mut wide = conv_model(cout, 3, side, 5).expect("model");
    assert_eq!(rewrite(&mut wide).expect("rewrite"), 0, "a 5x5 kernel on 3 channels stays tract's");
    let mut ours = build(cin).expect("model");
    assert_eq!(rewrite(&mut ours).expect("rewrite"), 1);
    assert!(ours.nodes().iter().any(|n| n.op_is::<DirectConv>()));
    same_output(ours, tract_output(build(cin).expect("model"), &input), &input);
}

/// `Rewrites::NONE` (what `clip-edge bench --tract-ops` loads) leaves the
/// convolution tract's; the default rewrites take it where the host has the
/// kernel's SIMD.
#[test]
fn no_rewrites_leave_tract_s_convolution() {
    use crate::optimise::{optimise, Rewrites};
    let ours = |rewrites| {
        let (model, _) = optimise(dense_model(40, 9, 12).expect("model"), crate::Precision::F32, rewrites)
            .expect("optimise");
        model.nodes().iter().filter(|n| n.op_is::<DirectConv>()).count()
    };
    assert_eq!(ours(Rewrites::NONE), 0);
    assert_eq!(ours(Rewrites::default()), usize::from(host_block(40).is_some()));
}

/// `model` run by tract as it comes (optimised) on `input`.
fn tract_output(model: TypedModel, input: &Tensor) -> TValue {
    let plan = model.into_optimized().expect("opt").into_runnable().expect("plan");
    plan.run(tvec![input.clone().into_tvalue()]).expect("run").remove(0)
}

/// Checks that `ours` (rewritten) gives `want` on `input` within 1e-5
/// (relative); returns its output.
fn same_output(ours: TypedModel, want: TValue, input: &Tensor) -> Vec<f32> {
    let got = tract_output(ours, input);
    assert_eq!(got.shape(), want.shape());
    let got: Vec<f32> = got.to_plain_array_view::<f32>().expect("y").iter().copied().collect();
    let want: Vec<f32> = want.to_plain_array_view::<f32>().expect("y").iter().copied().collect();
    let worst = relative_difference(&got, &want);
    assert!(worst < 1e-5, "max relative |d| {worst}");
    got
}

/// `SAME_UPPER` padding (asymmetric: the extra row and column at the end).
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn asymmetric_padding_matches() {
    let (cout, cin, h, w, kh, kw, stride) = (20, 4, 10, 9, 4, 3, 2);
    let block = host_block(cout).expect("a host with SIMD");
    let x: Vec<f32> = (0..cin * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    let k: Vec<f32> = (0..cout * cin * kh * kw).map(|i| ((i * 13 % 29) as f32 - 14.0) / 10.0).collect();
    let bias: Vec<f32> = (0..cout).map(|c| 0.25 * c as f32).collect();
    let op = DirectConv::new(
        &k,
        &bias,
        [cout, cin, kh, kw],
        [stride, stride],
        PaddingSpec::SameUpper,
        true,
        block,
    )
    .expect("op");
    // SAME_UPPER: ceil(size / stride) outputs, the odd padding after.
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    let (pad_h, pad_w) = ((oh - 1) * stride + kh - h, (ow - 1) * stride + kw - w);
    let input = Tensor::from_shape(&[1, cin, h, w], &x).expect("x");
    let y = op.eval(&EvalContext::out_of_plan(), tvec![input.into_tvalue()]).expect("eval");
    assert_eq!(y[0].shape(), &[1, cout, oh, ow]);
    let got: Vec<f32> = y[0].to_plain_array_view::<f32>().expect("y").iter().copied().collect();
    let want = reference_padded(&x, &k, (cout, cin, h, w, kh, kw, stride), [pad_h / 2, pad_w / 2], [oh, ow]);
    let worst = relative_difference(&got, &want);
    assert!(worst < 1e-5, "max relative |d| {worst}");
}

/// On a thread pool, with shapes large enough to be split (over tract's
/// 32768-element threshold): bands of rows (32 px) and runs of blocks
/// (4 px, gathered) on the pool's threads.
#[test]
#[cfg(feature = "threads")]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn threads_give_the_same_output() {
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    // A flat-run case and a gathered one (4 px planes).
    for case in [(96, 40, 32, 32, 3, 3, 1, 1), (200, 320, 4, 4, 3, 3, 1, 1)] {
        let (cout, cin, h, w, ..) = case;
        let (op, x, k) = fixture(case, host_block(cout).expect("a host with SIMD"), true);
        let input = Tensor::from_shape(&[1, cin, h, w], &x).expect("x");
        let y = multithread_tract_scope(Executor::multithread(3), || {
            op.eval(&EvalContext::out_of_plan(), tvec![input.into_tvalue()])
        })
        .expect("eval");
        let got: Vec<f32> = y[0].to_plain_array_view::<f32>().expect("y").iter().copied().collect();
        let worst = relative_difference(&got, &reference(&x, &k, case));
        assert!(worst < 1e-5, "{case:?}: max relative |d| {worst}");
    }
}

/// A strided 1x1 convolution, which tract's declutter splits into
/// `Downsample`s and a product: after declutter the rewrite takes that
/// product, bias included, and reads the image before the `Downsample`s;
/// same output as tract's.
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn the_rewrite_takes_a_strided_pointwise_convolution() {
    let (cout, cin, side) = (40, 16, 13);
    let x: Vec<f32> = (0..cin * side * side).map(|i| ((i * 31 % 97) as f32 - 48.0) / 30.0).collect();
    let input = Tensor::from_shape(&[1, cin, side, side], &x).expect("x");
    let want = tract_output(conv_model(cout, cin, side, 1).expect("model"), &input);
    assert_eq!(want.shape(), &[1, cout, 7, 7]);
    let mut ours = conv_model(cout, cin, side, 1).expect("model");
    ours.declutter().expect("declutter");
    assert!(ours.nodes().iter().any(|n| n.op_is::<Downsample>()), "tract's declutter splits the stride off");
    assert_eq!(rewrite(&mut ours).expect("rewrite"), 1);
    assert!(ours.nodes().iter().all(|n| !n.op_is::<Downsample>() && !n.op_is::<EinSum>()));
    same_output(ours, want, &input);
}

/// A strided 1x1 convolution over a batch of two images stays tract's (the
/// op takes one image): the rewrite declines rather than failing.
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn a_batch_of_two_stays_tract_s() {
    let mut model = batch_conv_model(2, 40, 16, 13, 1).expect("model").into_decluttered().expect("declutter");
    assert!(model.nodes().iter().any(|n| n.op_is::<Downsample>()), "tract's declutter splits the stride off");
    assert_eq!(rewrite(&mut model).expect("rewrite"), 0);
}

/// A ReLU (`max(y, 0)`) that alone follows the convolution is folded into
/// the op; a `max(y, 1)` is not; same output as tract's either way.
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn the_rewrite_folds_a_following_relu() {
    let (cout, cin, side) = (40, 9, 12);
    let x: Vec<f32> = (0..cin * side * side).map(|i| ((i * 31 % 97) as f32 - 48.0) / 30.0).collect();
    let input = Tensor::from_shape(&[1, cin, side, side], &x).expect("x");
    for (floor, folded) in [(0.0f32, true), (1.0, false)] {
        let build = || -> TractResult<TypedModel> {
            let mut model = dense_model(cout, cin, side)?;
            let y = model.output_outlets()?[0];
            let floor = model.add_const("floor", Tensor::from_shape(&[1, 1, 1, 1], &[floor])?)?;
            let relu = model.wire_node("relu", math::max(), &[y, floor])?;
            model.select_output_outlets(&relu)?;
            Ok(model)
        };
        let mut ours = build().expect("model");
        assert_eq!(rewrite(&mut ours).expect("rewrite"), 1);
        let relus = ours.nodes().iter().filter(|n| n.op_as::<DirectConv>().is_some_and(|c| c.relu)).count();
        assert_eq!(relus, usize::from(folded), "floor {floor}");
        assert_eq!(ours.nodes().iter().any(|n| n.op_is::<TypedBinOp>()), !folded, "floor {floor}");
        let got = same_output(ours, tract_output(build().expect("model"), &input), &input);
        assert!(got.iter().all(|&v| v >= floor), "floor {floor}");
    }
}
