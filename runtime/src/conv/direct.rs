//! The kernel of [`DirectConv`]: a direct convolution with output channels
//! in vector lanes and no im2col on large planes.
//!
//! The padded input is split into `sy x sx` phases per channel (those that
//! some tap reads), as the depthwise kernel's ([`crate::depthwise`]), so
//! output `q = y * phase_w + x` reads tap `(ic, ky, kx)` at one offset from
//! `q` for every output: each tap's inputs for `R` consecutive outputs are
//! `R` consecutive values. A tile of `R` outputs by one block of output
//! channels (`L` vectors) then costs, per tap, `R` broadcasts and `L` vector
//! loads of packed weights for `R x L` fused multiply-adds. Tiles run flat
//! over the padded rows or from each multiple of `R` along each output row,
//! whichever computes fewer positions past a row's end (`x >= ow`), which are
//! computed and dropped.
//!
//! On small planes, where those dropped positions would be more than a
//! fifth of the outputs kept, each group's exact outputs are gathered into a
//! panel first (an im2col of the plane, which is small there).
//!
//! Threads take items ([`Split`]): bands of output rows (each fills only
//! the input rows it reads) times runs of blocks (each reads only their
//! weights), and write their tiles straight into the NCHW output, so that a
//! convolution is one parallel step: a pool's threads sleep between steps,
//! and waking them for a fill, a panel, the tiles and an output copy in turn
//! cost more than the fill and the copy saved on two threads.

use tract_core::internal::*;
use tract_linalg::multithread::par_chunks_mut;

use super::DirectConv;
use crate::depthwise::{Geometry, PhaseFill};

thread_local! {
    /// [`Direct`]'s scratch (each thread's): an item's padded input rows and gathered panel.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Output channels per packed block for vectors of `lanes` f32 and `cout`
/// output channels: `L` vectors, the most the kernel takes for the width
/// whose zero channels past `cout` (in whole vectors) stay within a
/// sixteenth of those needed; else one vector (none past the last).
pub(super) fn block(lanes: usize, cout: usize) -> Option<usize> {
    let most = match lanes {
        16 => 3,
        8 => 2,
        4 => 4,
        _ => return None,
    };
    let need = cout.div_ceil(lanes).max(1);
    let padding = |l: usize| need.div_ceil(l) * l - need;
    Some(lanes * (1..=most.min(need)).rev().find(|&l| padding(l) * 16 <= need).unwrap_or(1))
}

/// Computes `y` (`Cout` planes of `g.oh x g.ow`) from `x` (`Cin` planes of
/// `g.h x g.w`), plus `residual` (`y`'s shape) where the op has one.
pub(super) fn run(
    conv: &DirectConv,
    g: &Geometry,
    x: &[f32],
    residual: Option<&[f32]>,
    y: &mut [f32],
) -> TractResult<()> {
    on_pool(|threads| pulp::Arch::new().dispatch(Direct { conv, g, x, residual, y, threads }))
}

/// Runs `f` on one of the executor's pool threads, with the executor in scope
/// there, where it has a pool of more than one thread (else here): the op's
/// parallel step then starts from a pool thread (rayon runs it in place)
/// instead of waking the pool from the caller and the caller again at its
/// end. `f` gets the number of threads that its parallel step runs on.
#[cfg(feature = "threads")]
fn on_pool<R: Send>(f: impl FnOnce(usize) -> R + Send) -> R {
    use tract_linalg::multithread::{current_tract_executor, multithread_tract_scope, Executor};
    match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 => {
            let executor = Executor::MultiThread(Arc::clone(&pool));
            let threads = pool.current_num_threads();
            pool.install(|| multithread_tract_scope(executor, || f(threads)))
        }
        _ => f(1),
    }
}

#[cfg(not(feature = "threads"))]
fn on_pool<R: Send>(f: impl FnOnce(usize) -> R + Send) -> R {
    f(1)
}

/// Work (multiply-adds) below which tract's `par_chunks_mut` stays on the
/// calling thread.
#[cfg(feature = "threads")]
fn parallel_threshold() -> usize {
    tract_linalg::multithread::current_threading_element_threshold()
}

#[cfg(not(feature = "threads"))]
fn parallel_threshold() -> usize {
    usize::MAX
}

/// The arguments of [`run`], run for one instruction set.
pub(super) struct Direct<'a> {
    pub(super) conv: &'a DirectConv,
    pub(super) g: &'a Geometry,
    pub(super) x: &'a [f32],
    /// Added to the output (`y`'s shape), before the ReLU.
    pub(super) residual: Option<&'a [f32]>,
    pub(super) y: &'a mut [f32],
    /// Threads that the parallel step runs on.
    pub(super) threads: usize,
}

impl pulp::WithSimd for Direct<'_> {
    type Output = TractResult<()>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> TractResult<()> {
        // Tiles of `L` vectors by `R` outputs: 24 accumulators where the
        // instruction set has 32 registers, 12 where it has 16 (AVX2).
        match (S::F32_LANES, self.conv.block() / S::F32_LANES) {
            (16, 3) | (4, 3) => self.tiles::<S, 3, 8>(simd),
            (16, 2) | (4, 2) => self.tiles::<S, 2, 12>(simd),
            (16, 1) | (4, 1) => self.tiles::<S, 1, 24>(simd),
            (4, 4) => self.tiles::<S, 4, 6>(simd),
            (8, 2) => self.tiles::<S, 2, 6>(simd),
            (8, 1) => self.tiles::<S, 1, 12>(simd),
            (lanes, _) => bail!(
                "DirectConv: weights packed for {} channels per block, no kernel for it with {lanes}-lane vectors",
                self.conv.block()
            ),
        }
    }
}

impl Direct<'_> {
    /// The convolution in tiles of `R` outputs by `L` vectors of channels,
    /// cut into items ([`Split`]: bands of output rows times runs of blocks)
    /// that a thread each fills, gathers and computes alone, writing its
    /// outputs in place: one parallel step a convolution.
    #[inline(always)]
    fn tiles<S: pulp::Simd, const L: usize, const R: usize>(self, simd: S) -> TractResult<()> {
        let Direct { conv, g, x, residual, y, threads } = self;
        let block = L * S::F32_LANES;
        ensure!(
            conv.block() == block,
            "DirectConv: weights packed for {} channels per block, this CPU's kernel takes {block}",
            conv.block()
        );
        let plane_out = g.oh * g.ow;
        if plane_out == 0 {
            return Ok(());
        }
        let packed = conv.packed.try_as_plain_ram()?;
        let packed = packed.as_slice::<f32>()?;
        let bias = conv.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let taps = conv.cin * conv.kernel_hw[0] * conv.kernel_hw[1];
        let blocks = packed.len() / (taps * block);
        ensure!(
            y.len() == conv.cout * plane_out
                && conv.cout <= blocks * block
                && x.len() == conv.cin * g.h * g.w
                && residual.is_none_or(|r| r.len() == y.len()),
            "direct convolution: {} inputs and {} outputs for {} -> {} channels",
            x.len(),
            y.len(),
            conv.cin,
            conv.cout
        );
        // Below tract's threshold its parallel helper runs every item on this
        // thread: one item then (no band's rows filled twice).
        let work_size = blocks * block * taps * plane_out;
        let threads = if work_size < parallel_threshold() { 1 } else { threads };
        let mut items = Split::new(g.oh, blocks, threads).items(y, [g.oh, g.ow], block, blocks)?;
        let work =
            |item: &mut Item| simd.vectorize(Band::<L, R> { conv, g, x, residual, packed, bias, item });
        if let [item] = &mut items[..] {
            return work(item);
        }
        par_chunks_mut(&mut items, 1, work_size, |_, items| items.iter_mut().try_for_each(work))
    }
}

/// Output rows a band holds at least where the rows are cut into bands.
const MIN_BAND_ROWS: usize = 4;

/// How a convolution's output is cut into items for `threads` threads:
/// `bands` of output rows times `chunks` of blocks of output channels.
/// One item a thread: each item fills (and on small planes gathers) its
/// band's input rows again, 27 of the ~150 us of the default model's last
/// 320-channel convolution, which two items a thread repeated for nothing
/// (measured 1.44 -> 1.30 ms for the model at two threads). As many bands as
/// the rows allow at [`MIN_BAND_ROWS`] rows each (a band fills only the
/// input rows it reads) among the divisors of `threads`, the rest of the
/// items as runs of blocks: on small planes, where there are few rows and
/// many channels (each item of a run reads only its blocks' weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Split {
    pub(super) bands: usize,
    pub(super) chunks: usize,
}

impl Split {
    /// The cut of `oh` output rows and `blocks` blocks for `threads` threads.
    pub(super) fn new(oh: usize, blocks: usize, threads: usize) -> Split {
        if threads <= 1 {
            return Split { bands: 1, chunks: 1 };
        }
        let most = (oh / MIN_BAND_ROWS).clamp(1, threads);
        let bands = (1..=most).rev().find(|&b| threads.is_multiple_of(b)).unwrap_or(1);
        Split { bands, chunks: (threads / bands).clamp(1, blocks.max(1)) }
    }

    /// Part `i` of `n` of `0..len`.
    fn part(i: usize, n: usize, len: usize) -> std::ops::Range<usize> {
        i * len / n..(i + 1) * len / n
    }

    /// Cuts the NCHW output `y` (planes of `oh x ow`, `block` channels a
    /// block, `blocks` blocks) into the items, run of blocks by run of
    /// blocks (a thread that takes neighbouring items shares their weights),
    /// each with its rows of its channels' planes.
    fn items<'y>(
        self,
        y: &'y mut [f32],
        [oh, ow]: [usize; 2],
        block: usize,
        blocks: usize,
    ) -> TractResult<Vec<Item<'y>>> {
        let Split { bands, chunks } = self;
        let mut items: Vec<Item> = (0..chunks)
            .flat_map(|c| {
                (0..bands).map(move |b| Item {
                    rows: Split::part(b, bands, oh),
                    blocks: Split::part(c, chunks, blocks),
                    planes: vec![],
                })
            })
            .collect();
        for (channel, plane) in y.chunks_exact_mut(oh * ow).enumerate() {
            let chunk = (0..chunks)
                .find(|&c| Split::part(c, chunks, blocks).contains(&(channel / block)))
                .context("direct convolution: a channel past the packed blocks")?;
            let mut rest = plane;
            for item in &mut items[chunk * bands..(chunk + 1) * bands] {
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(item.rows.len() * ow);
                item.planes.push(piece);
                rest = tail;
            }
        }
        Ok(items)
    }
}

/// One item of a [`Split`]: output rows `rows` of the channels of blocks
/// `blocks`, whose rows of the output are `planes` (channel by channel).
struct Item<'y> {
    rows: std::ops::Range<usize>,
    blocks: std::ops::Range<usize>,
    planes: Vec<&'y mut [f32]>,
}

/// An [`Item`] computed: its band's input rows filled into their phases
/// (and gathered on small planes), then its tiles, written into its planes.
struct Band<'a, 'y, const L: usize, const R: usize> {
    conv: &'a DirectConv,
    /// The whole convolution's geometry.
    g: &'a Geometry,
    x: &'a [f32],
    residual: Option<&'a [f32]>,
    packed: &'a [f32],
    bias: &'a [f32],
    item: &'a mut Item<'y>,
}

impl<const L: usize, const R: usize> pulp::WithSimd for Band<'_, '_, L, R> {
    type Output = TractResult<()>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> TractResult<()> {
        let Band { conv, g: whole, x, residual, packed, bias, item } = self;
        let lanes = S::F32_LANES;
        let block = L * lanes;
        let [kh, kw] = conv.kernel_hw;
        let [sy, sx] = conv.strides;
        if item.rows.is_empty() || item.planes.is_empty() {
            return Ok(());
        }
        // The band as a convolution of its own: the padded rows that its
        // outputs read (from a multiple of `sy`: each row keeps its phase),
        // and the image rows `r0..r1` among them.
        let (top, bottom) = (item.rows.start * sy, (item.rows.end - 1) * sy + kh);
        let r0 = top.saturating_sub(whole.pad_top).min(whole.h);
        let r1 = bottom.saturating_sub(whole.pad_top).clamp(r0, whole.h);
        let pad_top = (r0 + whole.pad_top).saturating_sub(top);
        let g = Geometry {
            h: r1 - r0,
            oh: item.rows.len(),
            pad_top,
            ph: (bottom - top).max(r1 - r0 + pad_top),
            ..*whole
        };
        let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
        let (phase_h, phase_w) = (g.ph.div_ceil(sy), g.phase_w);
        // Tiles run either flat over the padded rows (`R` consecutive
        // positions, the ones past a row's end computed and dropped) or
        // along each output row (`R` positions from each multiple of `R`,
        // those past the row's end dropped): whichever computes fewer.
        let flat = ((g.oh - 1) * phase_w + g.ow).div_ceil(R);
        let per_row = g.ow.div_ceil(R);
        let layout = if g.oh * per_row < flat {
            Layout { per_row, src_row: phase_w, out_row: phase_w, pitch: phase_w }
        } else {
            Layout { per_row: flat, src_row: 0, out_row: 0, pitch: phase_w }
        };
        let groups = flat.min(g.oh * per_row);
        let reach = (kh - 1) / sy * phase_w + (kw - 1) / sx;
        let phase_len = (layout.src::<R>(groups - 1) + R + reach).max(phase_h * phase_w);
        // Phases that some tap reads (all but where the kernel is narrower than its stride).
        let phases = [kh.min(sy), kw.min(sx)];
        let fill = PhaseFill::new(&g, conv.strides, phases, phase_len);
        let channel_len = fill.channel_len();
        let taps = conv.cin * kh * kw;
        // On small planes the positions dropped would be many (more than a
        // fifth of the outputs kept): gather each group's exact outputs into
        // a panel instead (`[group][tap][R]`, an im2col).
        let exact = plane_out.div_ceil(R);
        let gather = groups * 5 > exact * 6;
        let panel_len = if gather { exact * taps * R } else { 0 };
        // Scratch kept by each thread from one run to the next: fresh
        // allocations of this size cost page faults, which do not thread.
        let mut scratch = SCRATCH.with_borrow_mut(std::mem::take);
        scratch.resize(scratch.len().max(conv.cin * channel_len + panel_len), 0.0);
        let (padded, rest) = scratch.split_at_mut(conv.cin * channel_len);
        let gathered = &mut rest[..panel_len];
        let whole_plane = whole.h * whole.w;
        for (ic, dst) in padded.chunks_exact_mut(channel_len).enumerate() {
            let at = ic * whole_plane + r0 * g.w;
            if plane_in > 0 {
                fill.fill(&x[at..at + plane_in], dst);
            } else {
                // No image rows in the band, or a zero-width image: all padding.
                dst.fill(0.0);
            }
        }
        // Each tap's offset in a channel's phases, and within its phase.
        let (within, in_phase): (TVec<usize>, TVec<usize>) = (0..kh)
            .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| {
                let in_phase = ky / sy * phase_w + kx / sx;
                (((ky % sy) * phases[1] + kx % sx) * phase_len + in_phase, in_phase)
            })
            .unzip();
        // Every tap of every tile reads inside its own phase.
        ensure!(
            in_phase.iter().all(|&o| o + layout.src::<R>(groups - 1) + R <= phase_len),
            "direct convolution geometry: a tap would read past its phase"
        );
        let offsets: Vec<usize> =
            (0..conv.cin).flat_map(|ic| within.iter().map(move |&o| ic * channel_len + o)).collect();
        let (groups, layout, source, offsets) = if gather {
            for (gi, panel) in gathered.chunks_exact_mut(taps * R).enumerate() {
                // The group's outputs in runs along one output row: (first, count, padded position).
                let mut runs: TVec<(usize, usize, usize)> = tvec!();
                let (start, end) = (gi * R, (gi * R + R).min(plane_out));
                let mut p = start;
                while p < end {
                    let n = (g.ow - p % g.ow).min(end - p);
                    runs.push((p - start, n, p / g.ow * phase_w + p % g.ow));
                    p += n;
                }
                // Positions past the plane (the last group's) are computed and dropped.
                let kept = end - start;
                for (dst, &off) in panel.chunks_exact_mut(R).zip(&offsets) {
                    for &(r, n, at) in &runs {
                        let src = padded
                            .get(off + at..off + at + n)
                            .context("direct convolution geometry: a gathered tap past the input")?;
                        dst[r..r + n].copy_from_slice(src);
                    }
                    dst[kept..].fill(0.0);
                }
            }
            let layout = Layout { per_row: 1, src_row: taps * R, out_row: R, pitch: g.ow };
            (exact, layout, &*gathered, (0..taps).map(|k| k * R).collect())
        } else {
            (groups, layout, &*padded, offsets)
        };
        // Runs of a group's outputs that land in one output row: (first, count, index in the band's plane).
        let pitch = layout.pitch;
        let runs: Vec<TVec<(usize, usize, usize)>> = (0..groups)
            .map(|gi| {
                let mut runs = tvec!();
                let start = layout.out::<R>(gi);
                let (mut q, end) = (start, start + R);
                while q < end {
                    let (oy, ox) = (q / pitch, q % pitch);
                    let row_end = (oy * pitch + pitch).min(end);
                    if oy < g.oh && ox < g.ow {
                        runs.push((q - start, (oy * pitch + g.ow).min(row_end) - q, oy * g.ow + ox));
                    }
                    q = row_end;
                }
                runs
            })
            .collect();
        let planes = item.blocks.clone().zip(item.planes.chunks_mut(block));
        for (b, planes) in planes {
            let (Some(weights), Some(bias)) =
                (packed.get(b * taps * block..(b + 1) * taps * block), bias.get(b * block..(b + 1) * block))
            else {
                bail!("direct convolution: block {b} past the packed weights");
            };
            let bias: [S::f32s; L] = core::array::from_fn(|l| load::<S>(&bias[l * lanes..]));
            for (gi, runs) in runs.iter().enumerate() {
                let Some(mut acc) =
                    tile::<S, L, R>(simd, source, &offsets, layout.src::<R>(gi), weights, bias)
                else {
                    bail!("direct convolution geometry: group {gi} would read past its input");
                };
                if conv.relu && residual.is_none() {
                    let zero = simd.splat_f32s(0.0);
                    acc.iter_mut().flatten().for_each(|a| *a = simd.max_f32s(*a, zero));
                }
                let acc: &[f32] = bytemuck::cast_slice(acc.as_flattened());
                for (c, plane) in planes.iter_mut().enumerate() {
                    // The residual's rows of this band in the channel's plane.
                    let at = (b * block + c) * whole.oh * whole.ow + item.rows.start * g.ow;
                    let residual = residual
                        .map(|r| {
                            r.get(at..at + plane_out).context("direct convolution: residual past its end")
                        })
                        .transpose()?;
                    for &(from, n, to) in runs {
                        let dst = plane
                            .get_mut(to..to + n)
                            .context("direct convolution geometry: a run past the band's outputs")?;
                        let outputs = acc.chunks_exact(block).skip(from);
                        match residual {
                            None => dst.iter_mut().zip(outputs).for_each(|(d, o)| *d = o[c]),
                            Some(r) => {
                                for ((d, o), &r) in dst.iter_mut().zip(outputs).zip(&r[to..to + n]) {
                                    let v = o[c] + r;
                                    *d = if conv.relu { v.max(0.0) } else { v };
                                }
                            }
                        }
                    }
                }
            }
        }
        SCRATCH.with_borrow_mut(|s| *s = scratch);
        Ok(())
    }
}

/// Where each tile's `R` outputs lie: tiles come `per_row` to a row, `R`
/// positions apart, rows `src_row` apart in the source the tiles read and
/// `out_row` apart in the output positions, whose rows are `pitch` apart.
#[derive(Clone, Copy)]
struct Layout {
    per_row: usize,
    src_row: usize,
    out_row: usize,
    pitch: usize,
}

impl Layout {
    /// Where tile `gi` starts in the source.
    fn src<const R: usize>(&self, gi: usize) -> usize {
        gi / self.per_row * self.src_row + gi % self.per_row * R
    }

    /// Where tile `gi` starts in the output positions.
    fn out<const R: usize>(&self, gi: usize) -> usize {
        gi / self.per_row * self.out_row + gi % self.per_row * R
    }
}

/// One tile: `R` outputs from position `q` of `source` (the padded input,
/// or the gathered panel) on, each `L` vectors of output channels: `bias`
/// plus, for each tap, the source at the tap's offset times the tap's packed
/// weights. `None` if a tap would read past `source` (the caller's geometry
/// checks rule that out).
#[inline(always)]
fn tile<S: pulp::Simd, const L: usize, const R: usize>(
    simd: S,
    source: &[f32],
    offsets: &[usize],
    q: usize,
    weights: &[f32],
    bias: [S::f32s; L],
) -> Option<[[S::f32s; L]; R]> {
    let lanes = S::F32_LANES;
    let mut acc = [bias; R];
    let mut inside = true;
    for (&off, w) in offsets.iter().zip(weights.chunks_exact(L * lanes)) {
        let Some(xs) = source.get(off + q..off + q + R) else {
            inside = false;
            continue;
        };
        let w: [S::f32s; L] = core::array::from_fn(|l| load::<S>(&w[l * lanes..]));
        for (a, &x) in acc.iter_mut().zip(xs) {
            let x = simd.splat_f32s(x);
            for (a, &w) in a.iter_mut().zip(&w) {
                *a = simd.mul_add_e_f32s(x, w, *a);
            }
        }
    }
    inside.then_some(acc)
}

/// The `S::f32s` at the start of `s` (unaligned; `s` holds at least one).
#[inline(always)]
fn load<S: pulp::Simd>(s: &[f32]) -> S::f32s {
    bytemuck::pod_read_unaligned(bytemuck::cast_slice(&s[..S::F32_LANES]))
}
