//! `PackPatches`: im2col of an i8 NCHW image straight into the K=4-inner
//! panels (`PackedI8K4`) that tract's int8 dot-product kernels read (VNNI on
//! x86, `sdot` on Cortex-A76).
//!
//! tract 0.23.9's own `Im2col` fills that layout one byte at a time through
//! a general writer (about 1.8 ns per byte here, 40% of the default model's
//! int8 frame). This op fills each panel straight from the image: four
//! im2col rows of the panel's pixels at a time (one row copy each where the
//! pixels lie in one output row), interleaved into the panel's 32-bit
//! words. It replaces tract's node after optimisation ([`replace_im2col`])
//! only for the case it implements (2-D NCHW, one group, zero padding value,
//! panels of 4, 8, 16 or 32 pixels); any other stays tract's.

use tract_core::internal::*;
use tract_core::ops::cnn::conv::Im2Col;
use tract_core::ops::cnn::PoolSpec;
use tract_linalg::mmm::{EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::multithread::par_chunks_mut;
use tract_linalg::pack::PackedI8K4;

/// The geometry of one convolution's patches.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Geometry {
    channels: usize,
    height: usize,
    width: usize,
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pad: [usize; 2],
    out: [usize; 2],
}

impl Geometry {
    fn new(pool_spec: &PoolSpec, input_shape: &[usize]) -> TractResult<Geometry> {
        ensure!(input_shape.len() == 4 && pool_spec.kernel_shape.len() == 2);
        let hw = [input_shape[2], input_shape[3]];
        let padding = pool_spec.computed_padding(&hw);
        let (s, d) = (pool_spec.strides(), pool_spec.dilations());
        Ok(Geometry {
            channels: input_shape[1],
            height: hw[0],
            width: hw[1],
            kernel: [pool_spec.kernel_shape[0], pool_spec.kernel_shape[1]],
            strides: [s[0], s[1]],
            dilations: [d[0], d[1]],
            pad: [padding[0].pad_before, padding[1].pad_before],
            out: [padding[0].convoluted, padding[1].convoluted],
        })
    }

    fn k(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    fn n(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Rows and columns of the zero-padded image that the patches read:
    /// padding before, the image, and padding after as far as the last patch reaches.
    fn padded(&self) -> [usize; 2] {
        let reach = |i: usize| {
            if self.out[i] == 0 {
                0
            } else {
                (self.out[i] - 1) * self.strides[i] + (self.kernel[i] - 1) * self.dilations[i] + 1
            }
        };
        [reach(0), reach(1)]
    }

    /// The image with its padding written out as zeros, so that every patch
    /// value is a plain read: `channels` planes of `padded()` size.
    fn pad_image(&self, image: &[u8]) -> Vec<u8> {
        let [ph, pw] = self.padded();
        let mut out = vec![0u8; self.channels * ph * pw];
        let (h, w) = (self.height, self.width);
        if h * w == 0 {
            return out;
        }
        let rows = h.min(ph.saturating_sub(self.pad[0]));
        let cols = w.min(pw.saturating_sub(self.pad[1]));
        for (plane, src) in out.chunks_exact_mut(ph * pw).zip(image.chunks_exact(h * w)) {
            for y in 0..rows {
                let to = (y + self.pad[0]) * pw + self.pad[1];
                plane[to..to + cols].copy_from_slice(&src[y * w..y * w + cols]);
            }
        }
        out
    }

    /// Offset of each im2col row (channel, kernel row, kernel column in that
    /// order, as tract packs the kernel) from an output pixel's origin in
    /// the padded image.
    fn taps(&self) -> Vec<usize> {
        let [ph, pw] = self.padded();
        let mut taps = Vec::with_capacity(self.k());
        for c in 0..self.channels {
            for ky in 0..self.kernel[0] {
                for kx in 0..self.kernel[1] {
                    taps.push(c * ph * pw + ky * self.dilations[0] * pw + kx * self.dilations[1]);
                }
            }
        }
        taps
    }

    /// The packed patches of one image in `PackedI8K4(r)` layout: panels of
    /// `r` output pixels, each `ceil(k / 4)` blocks of `r` x 4 bytes, read
    /// from a zero-padded copy of the image. Panels are spread over the tract
    /// executor's threads; the bytes do not depend on their number.
    fn pack(&self, image: &[i8], r: usize, packed: &mut [u8]) -> TractResult<()> {
        match r {
            4 => self.pack_r::<4>(image, packed),
            8 => self.pack_r::<8>(image, packed),
            16 => self.pack_r::<16>(image, packed),
            32 => self.pack_r::<32>(image, packed),
            _ => bail!("PackPatches: no packing for panels of {r} pixels"),
        }
    }

    /// Panel widths [`Geometry::pack`] implements.
    fn packs(r: usize) -> bool {
        matches!(r, 4 | 8 | 16 | 32)
    }

    fn pack_r<const R: usize>(&self, image: &[i8], packed: &mut [u8]) -> TractResult<()> {
        let (k, n, ow) = (self.k(), self.n(), self.out[1]);
        let panel_len = k.div_ceil(4) * 4 * R;
        ensure!(
            packed.len() == n.div_ceil(R) * panel_len
                && image.len() == self.channels * self.height * self.width
        );
        if n == 0 {
            return Ok(());
        }
        let padded = self.pad_image(bytemuck::cast_slice(image));
        let taps = self.taps();
        let [_, pw] = self.padded();
        let [sy, sx] = self.strides;
        let origin = |col: usize| (col / ow) * sy * pw + (col % ow) * sx;
        par_chunks_mut(packed, panel_len, packed.len(), |first, chunk| {
            let mut quad = [[0u8; R]; 4];
            for (i, panel) in chunk.chunks_exact_mut(panel_len).enumerate() {
                let col0 = (first + i) * R;
                let base = origin(col0);
                if sx == 1 && col0 + R <= n && col0 % ow + R <= ow {
                    // The panel's pixels lie side by side in one output row:
                    // each im2col row's values are R consecutive bytes.
                    for (kb, block) in panel.chunks_exact_mut(4 * R).enumerate() {
                        for (l, lane) in quad.iter_mut().enumerate() {
                            match taps.get(kb * 4 + l) {
                                Some(&t) => lane.copy_from_slice(&padded[base + t..base + t + R]),
                                None => *lane = [0; R],
                            }
                        }
                        interleave([&quad[0], &quad[1], &quad[2], &quad[3]], block);
                    }
                    continue;
                }
                // Otherwise, runs of pixels that share an output row (strided
                // reads for a horizontal stride above 1).
                let mut runs = [(0usize, 0usize, 0usize); R];
                let mut count = 0;
                let mut j = 0;
                while j < R && col0 + j < n {
                    let col = col0 + j;
                    let len = (ow - col % ow).min(R - j).min(n - col);
                    runs[count] = (j, len, origin(col));
                    count += 1;
                    j += len;
                }
                for (kb, block) in panel.chunks_exact_mut(4 * R).enumerate() {
                    for (l, lane) in quad.iter_mut().enumerate() {
                        *lane = [0; R];
                        let Some(&tap) = taps.get(kb * 4 + l) else { continue };
                        for &(j0, len, o) in &runs[..count] {
                            let dst = &mut lane[j0..j0 + len];
                            if sx == 1 {
                                let src = &padded[o + tap..o + tap + len];
                                let (mut d, mut s) = (dst.chunks_exact_mut(8), src.chunks_exact(8));
                                (&mut d).zip(&mut s).for_each(|(d, s)| d.copy_from_slice(s));
                                d.into_remainder().iter_mut().zip(s.remainder()).for_each(|(d, s)| *d = *s);
                            } else {
                                let src = padded[o + tap..].iter().step_by(sx);
                                dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
                            }
                        }
                    }
                    interleave([&quad[0], &quad[1], &quad[2], &quad[3]], block);
                }
            }
            Ok(())
        })
    }
}

/// One K4 block: `R` pixels of four im2col rows, pixel by pixel, the four
/// rows' bytes side by side. Written as plain indexing on fixed-size rows,
/// which the compiler turns into byte shuffles.
#[inline(always)]
fn interleave<const R: usize>(rows: [&[u8; R]; 4], block: &mut [u8]) {
    let block = &mut block[..4 * R];
    for j in 0..R {
        block[4 * j] = rows[0][j];
        block[4 * j + 1] = rows[1][j];
        block[4 * j + 2] = rows[2][j];
        block[4 * j + 3] = rows[3][j];
    }
}

/// The replacement of one tract `Im2col` node: same inputs, same output.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct PackPatches {
    pool_spec: PoolSpec,
    format: PackedI8K4,
    output_fact: TypedFact,
}

impl Op for PackPatches {
    fn name(&self) -> StaticName {
        "ClipEdgePackPatches".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{}", self.format)])
    }

    op_as_typed_op!();
}

impl EvalOp for PackPatches {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape: TVec<usize> = x.shape().into();
        let geo = Geometry::new(&self.pool_spec, &shape)?;
        ensure!(shape[0] == 1, "PackPatches takes one image");
        let (k, n, r) = (geo.k(), geo.n(), self.format.r);
        let panel_len = k.div_ceil(4) * 4 * r;
        let mut packed = Tensor::zero_aligned::<i8>(&[n.div_ceil(r) * panel_len], self.format.alignment())?;
        {
            let xv = x.try_as_plain_ram()?;
            let mut pv = packed.try_as_plain_ram_mut()?;
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(pv.as_slice_mut::<i8>()?);
            geo.pack(xv.as_slice::<i8>()?, r, bytes)?;
        }
        let value: Box<dyn MMMInputValue> = Box::new(EagerPackedInput {
            fact: PackedExoticFact { format: Box::new(self.format.clone()), mn: n.to_dim(), k },
            packed: Arc::new(packed.into_blob()?),
            panel_bytes: if n > 0 { panel_len } else { 0 },
            mn: n,
        });
        let storage = PackedMatrixStorage::new_batched(&[1, 1], tvec![value]);
        Ok(tvec!(storage.into_tensor(i8::datum_type()).into_tvalue()))
    }
}

impl TypedOp for PackPatches {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output_fact.clone()))
    }

    as_op!();
}

/// Replaces every tract `Im2col` node of an optimised model that packs an i8
/// NCHW image for a `PackedI8K4` kernel (one group, padding value 0) by
/// [`PackPatches`]. Returns how many it replaced.
pub fn replace_im2col(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<Im2Col>() else { continue };
        let input = model.outlet_fact(node.inputs[0])?;
        let output = model.outlet_fact(id.into())?.clone();
        let Some(exotic) = output.exotic_fact.as_ref().and_then(|e| e.downcast_ref::<PackedExoticFact>())
        else {
            continue;
        };
        let Some(format) = exotic.format.downcast_ref::<PackedI8K4>() else { continue };
        let pad_is_zero = match node.inputs.get(1) {
            None => true,
            Some(o) => model
                .outlet_fact(*o)?
                .konst
                .as_ref()
                .is_some_and(|t| t.cast_to_scalar::<i32>().is_ok_and(|v| v == 0)),
        };
        let nchw = op.pool_spec.data_format == tract_core::ops::nn::DataFormat::NCHW;
        let shape_ok = input.shape.as_concrete().is_some_and(|s| s.len() == 4 && s[0] == 1);
        let supported = Geometry::packs(format.r);
        if input.datum_type != i8::datum_type()
            || op.group != 1
            || !pad_is_zero
            || !nchw
            || !shape_ok
            || !supported
        {
            continue;
        }
        let new =
            PackPatches { pool_spec: op.pool_spec.clone(), format: format.clone(), output_fact: output };
        let inputs = node.inputs.clone();
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, new)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col written the plain way, then laid out as K4 panels.
    fn reference(geo: &Geometry, image: &[i8], r: usize) -> Vec<u8> {
        let (k, n) = (geo.k(), geo.n());
        let mut cols = vec![0i8; k * n];
        for c in 0..geo.channels {
            for ky in 0..geo.kernel[0] {
                for kx in 0..geo.kernel[1] {
                    let kk = (c * geo.kernel[0] + ky) * geo.kernel[1] + kx;
                    for yo in 0..geo.out[0] {
                        for xo in 0..geo.out[1] {
                            let y =
                                (yo * geo.strides[0] + ky * geo.dilations[0]) as isize - geo.pad[0] as isize;
                            let x =
                                (xo * geo.strides[1] + kx * geo.dilations[1]) as isize - geo.pad[1] as isize;
                            if y >= 0 && x >= 0 && (y as usize) < geo.height && (x as usize) < geo.width {
                                cols[kk * n + yo * geo.out[1] + xo] =
                                    image[(c * geo.height + y as usize) * geo.width + x as usize];
                            }
                        }
                    }
                }
            }
        }
        let panel_len = k.div_ceil(4) * 4 * r;
        let mut out = vec![0u8; n.div_ceil(r) * panel_len];
        for kk in 0..k {
            for j in 0..n {
                out[(j / r) * panel_len + (kk / 4) * r * 4 + (j % r) * 4 + kk % 4] = cols[kk * n + j] as u8;
            }
        }
        out
    }

    #[test]
    fn packs_like_the_plain_im2col_for_every_stride_and_padding() {
        let cases = [
            // channels, h, w, kernel, stride, pad, dilation
            (3, 7, 9, 3, 1, 1, 1),
            (5, 8, 8, 3, 2, 1, 1),
            (2, 9, 6, 1, 2, 0, 1),
            (4, 6, 7, 3, 1, 0, 1),
            (3, 10, 11, 3, 1, 2, 2),
            (1, 5, 5, 5, 3, 2, 1),
        ];
        for (channels, height, width, kernel, stride, pad, dilation) in cases {
            let extent = (kernel - 1) * dilation + 1;
            let out = |d: usize| (d + 2 * pad - extent) / stride + 1;
            let geo = Geometry {
                channels,
                height,
                width,
                kernel: [kernel; 2],
                strides: [stride; 2],
                dilations: [dilation; 2],
                pad: [pad; 2],
                out: [out(height), out(width)],
            };
            let image: Vec<i8> = (0..channels * height * width).map(|i| (i * 37 % 255) as i8).collect();
            for r in [4, 8, 16, 32] {
                let want = reference(&geo, &image, r);
                let mut got = vec![0u8; want.len()];
                geo.pack(&image, r, &mut got).expect("pack");
                assert_eq!(
                    got, want,
                    "{channels}x{height}x{width} k{kernel} s{stride} p{pad} d{dilation} r{r}"
                );
            }
        }
    }
}
