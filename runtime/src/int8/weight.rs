//! A weighted layer's constant weight, f32 or stored int8, and its
//! symmetric per-channel quantisation.

use tract_core::internal::*;
use tract_core::ops::math;

use super::quantise::{ROUND_MAGIC, ROUND_MAGIC_BITS};
use crate::dequant::StoredInt8;

/// A layer's constant weight: f32, the int8 file's `Mul(Cast(q), scale)`
/// that tract leaves unfolded when the f32 weight would be large, or a
/// [`StoredInt8`] (how the int8-compute form loads the int8 file's weights,
/// `dequant::Fold::Stored`).
#[derive(Debug, Clone)]
pub(super) enum Weight {
    F32(Arc<Tensor>),
    Int8 {
        q: Arc<Tensor>,
        scale: Arc<Tensor>,
    },
    /// A [`StoredInt8`] seen through the reshapes that declutter wired after
    /// it (`ops`, first to last); `shape` is the weight's as the layer reads it.
    Stored {
        stored: StoredInt8,
        ops: Vec<AxisOp>,
        shape: TVec<usize>,
    },
}

/// How a [`Weight`] is held, without its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WeightKind {
    F32,
    Int8,
    Stored,
}

impl Weight {
    pub(super) fn kind(&self) -> WeightKind {
        match self {
            Weight::F32(_) => WeightKind::F32,
            Weight::Int8 { .. } => WeightKind::Int8,
            Weight::Stored { .. } => WeightKind::Stored,
        }
    }

    pub(super) fn of(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Weight>> {
        let fact = model.outlet_fact(outlet)?;
        if let Some(k) = &fact.konst {
            return Ok((k.datum_type() == f32::datum_type()).then(|| Weight::F32(k.clone())));
        }
        if let Some(stored) = Self::stored(model, outlet)? {
            return Ok(Some(stored));
        }
        let node = model.node(outlet.node);
        let is_mul =
            node.op_as::<tract_core::ops::binary::TypedBinOp>().is_some_and(|b| b.0.is::<math::Mul>());
        if !is_mul || node.inputs.len() != 2 || node.outputs[0].successors.len() != 1 {
            return Ok(None);
        }
        for (a, b) in [(0, 1), (1, 0)] {
            let cast = model.node(node.inputs[a].node);
            let Some(scale) = model.outlet_fact(node.inputs[b])?.konst.clone() else { continue };
            let is_cast =
                cast.op_as::<tract_core::ops::cast::Cast>().is_some_and(|c| c.to == f32::datum_type());
            if !is_cast || scale.datum_type() != f32::datum_type() {
                continue;
            }
            if let Some(q) = &model.outlet_fact(cast.inputs[0])?.konst {
                if q.datum_type() == i8::datum_type() && scale.rank() <= q.rank() {
                    return Ok(Some(Weight::Int8 { q: q.clone(), scale }));
                }
            }
        }
        Ok(None)
    }

    fn stored(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Weight>> {
        let Some(shape) = model.outlet_fact(outlet)?.shape.as_concrete().map(TVec::from) else {
            return Ok(None);
        };
        let mut ops = Vec::new();
        let mut at = outlet;
        loop {
            let node = model.node(at.node);
            if let Some(stored) = node.op_as::<StoredInt8>() {
                ops.reverse();
                return Ok(Some(Weight::Stored { stored: stored.clone(), ops, shape }));
            }
            match node.op_as::<AxisOp>() {
                Some(op) if node.inputs.len() == 1 && node.outputs[0].successors.len() == 1 => {
                    ops.push(op.clone());
                    at = node.inputs[0];
                }
                _ => return Ok(None),
            }
        }
    }

    pub(super) fn shape(&self) -> &[usize] {
        match self {
            Weight::F32(w) => w.shape(),
            Weight::Int8 { q, .. } => q.shape(),
            Weight::Stored { shape, .. } => shape,
        }
    }

    /// The weight in f32, as the layer reads it (for the layers that stay
    /// f32); `None` for a weight that is a constant already.
    pub(super) fn materialised(&self) -> TractResult<Option<Tensor>> {
        match self {
            Weight::F32(_) => Ok(None),
            Weight::Int8 { q, scale } => {
                Ok(Some(StoredInt8 { q: q.clone(), scale: scale.clone() }.dequantised()?))
            }
            Weight::Stored { stored, ops, shape } => {
                let mut w = stored.dequantised()?;
                for op in ops {
                    op.change_tensor(&mut w, false)?;
                }
                ensure!(
                    w.shape() == &shape[..],
                    "stored weight reshaped to {:?}, read as {shape:?}",
                    w.shape()
                );
                Ok(Some(w))
            }
        }
    }

    /// The int8 values and one scale per channel along `axis`: the stored ones
    /// when the file's scales are per channel along `axis`, else quantised here.
    pub(super) fn quantised(&self, axis: usize) -> TractResult<(Tensor, Vec<f32>)> {
        match self {
            Weight::F32(w) => quantise_weight(w, axis),
            Weight::Int8 { q, scale } => {
                let offset = q.rank() - scale.rank();
                let along_axis = scale.shape().iter().enumerate().all(|(i, &d)| {
                    if i + offset == axis {
                        d == q.shape()[axis]
                    } else {
                        d == 1
                    }
                });
                let scales: Vec<f32> = scale.to_plain_array_view::<f32>()?.iter().copied().collect();
                let stored_ok = along_axis && scales.iter().all(|s| s.is_finite() && *s > 0.0);
                if stored_ok {
                    return Ok(((**q).clone(), scales));
                }
                // Any other scale layout: back to f32, then per channel.
                let w = StoredInt8 { q: q.clone(), scale: scale.clone() }.dequantised()?;
                quantise_weight(&w, axis)
            }
            // As stored, when nothing reshaped it.
            Weight::Stored { stored, ops, .. } if ops.is_empty() => {
                Weight::Int8 { q: stored.q.clone(), scale: stored.scale.clone() }.quantised(axis)
            }
            // One weight in f32 at a time, quantised again through the
            // reshapes: q and its per-channel scale back.
            Weight::Stored { .. } => match self.materialised()? {
                Some(w) => quantise_weight(&w, axis),
                None => bail!("a stored weight has an f32 form"),
            },
        }
    }
}

/// Symmetric per-channel quantisation of a constant f32 weight along `axis`:
/// the int8 values and one scale per channel (`max|w| / 127`; 1 for a
/// channel of zeros).
pub fn quantise_weight(w: &Tensor, axis: usize) -> TractResult<(Tensor, Vec<f32>)> {
    let shape = w.shape();
    let (len, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
    let view = w.try_as_plain_ram()?;
    let values = view.as_slice::<f32>()?;
    // Values of channel c: every block of `len * inner`, at c * inner .. (c + 1) * inner.
    let lanes = |c: usize| {
        values.chunks_exact((len * inner).max(1)).flat_map(move |block| &block[c * inner..(c + 1) * inner])
    };
    let scales: Vec<f32> = (0..len)
        .map(|c| {
            let max = lanes(c).fold(0f32, |m, v| m.max(v.abs()));
            if max > 0.0 && max.is_finite() {
                max / 127.0
            } else {
                1.0
            }
        })
        .collect();
    let mut q = vec![0i8; values.len()];
    for (qb, vb) in q.chunks_exact_mut((len * inner).max(1)).zip(values.chunks_exact((len * inner).max(1))) {
        for ((qr, vr), &s) in
            qb.chunks_exact_mut(inner.max(1)).zip(vb.chunks_exact(inner.max(1))).zip(&scales)
        {
            quantise_row(qr, vr, s);
        }
    }
    Ok((Tensor::from_shape(shape, &q)?, scales))
}

/// `round_ties_even(v / s)` clamped to -127..=127 (0 for NaN), in the widest
/// vectors this CPU has: `round_ties_even` is a libm call per value on
/// baseline x86-64 (a quarter of the default model's cold start went there).
#[multiversion::multiversion(targets = "simd")]
fn quantise_row(q: &mut [i8], v: &[f32], s: f32) {
    q.iter_mut().zip(v).for_each(|(q, &v)| {
        let x = v / s;
        // Clamped first, so that the rounding add rounds correctly (|x| <= 127).
        let r = ((x.clamp(-127.0, 127.0) + ROUND_MAGIC).to_bits() as i32).wrapping_sub(ROUND_MAGIC_BITS);
        *q = if x.is_nan() { 0 } else { r as i8 };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_rounding_is_round_ties_even_then_clamp() {
        let s = 0.37f32;
        let mut v: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.5 * s).collect();
        v.extend((0..1000).map(|i| ((i * 7919 % 2001) as f32 - 1000.0) / 7.0));
        v.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX, -0.0, 1e-40]);
        let mut q = vec![0i8; v.len()];
        quantise_row(&mut q, &v, s);
        for (&v, &q) in v.iter().zip(&q) {
            assert_eq!(q, (v / s).round_ties_even().clamp(-127.0, 127.0) as i8, "{v}");
        }
    }
}
