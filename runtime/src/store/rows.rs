//! Embedding rows in the store's element type: served in place from the
//! file's buffer, decoded to f32, dotted with a query, and encoded by the
//! writer (the int8 per-row quantiser).

use half::f16;

use super::format::ElementType;

/// A block of rows borrowed from a store's buffer.
pub(super) enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Int8 { scales: &'a [f32], values: &'a [i8] },
}

impl<'a> Rows<'a> {
    /// The block of `rows` rows of `dim` values at byte `start` of `bytes`
    /// (8-byte aligned, and the block within it, as the reader has checked).
    pub fn new(bytes: &'a [u8], element: ElementType, start: usize, rows: usize, dim: usize) -> Self {
        let n = rows * dim;
        match element {
            ElementType::F32 => Rows::F32(bytemuck::cast_slice(&bytes[start..start + n * 4])),
            ElementType::F16 => Rows::F16(bytemuck::cast_slice(&bytes[start..start + n * 2])),
            ElementType::Int8 => {
                let scales_end = start + rows * 4;
                Rows::Int8 {
                    scales: bytemuck::cast_slice(&bytes[start..scales_end]),
                    values: bytemuck::cast_slice(&bytes[scales_end..scales_end + n]),
                }
            }
        }
    }

    /// Whether every value is finite (int8: every scale non-negative and
    /// small enough that `127 * scale` is finite, so every decoded value is).
    pub fn all_finite(&self) -> bool {
        match self {
            Rows::F32(v) => v.iter().all(|x| x.is_finite()),
            Rows::F16(v) => v.iter().all(|x| x.is_finite()),
            Rows::Int8 { scales, .. } => scales.iter().all(|s| *s >= 0.0 && (s * 127.0).is_finite()),
        }
    }

    /// Row `i` (of `d` values) decoded to f32.
    pub fn row(&self, i: usize, d: usize) -> Vec<f32> {
        match self {
            Rows::F32(v) => v[i * d..(i + 1) * d].to_vec(),
            Rows::F16(v) => v[i * d..(i + 1) * d].iter().map(|x| x.to_f32()).collect(),
            Rows::Int8 { scales, values } => {
                values[i * d..(i + 1) * d].iter().map(|&q| q as f32 * scales[i]).collect()
            }
        }
    }

    /// Dot product of `query` with each of the first `out.len()` rows.
    pub fn dot(&self, query: &[f32], out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.dot_row(i, query);
        }
    }

    /// Dot product of `query` with row `i` (rows have `query.len()` values).
    pub fn dot_row(&self, i: usize, query: &[f32]) -> f32 {
        let d = query.len();
        match self {
            Rows::F32(v) => dot(&v[i * d..(i + 1) * d], query),
            Rows::F16(v) => v[i * d..(i + 1) * d].iter().zip(query).map(|(a, b)| a.to_f32() * b).sum(),
            Rows::Int8 { scales, values } => {
                values[i * d..(i + 1) * d].iter().zip(query).map(|(&a, b)| a as f32 * b).sum::<f32>()
                    * scales[i]
            }
        }
    }
}

/// Dot product with eight independent partial sums, which the compiler keeps
/// in SIMD registers (a single running sum would serialise every addition).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Appends `rows` (row-major, `dim` values each) in `element`'s encoding;
/// int8 first writes one scale per row, `max|v| / 127`, then the values
/// divided by it, rounded and clamped to ±127.
pub(super) fn write_rows(out: &mut Vec<u8>, element: ElementType, dim: usize, rows: &[f32]) {
    match element {
        ElementType::F32 => rows.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        ElementType::F16 => rows.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        ElementType::Int8 => {
            let scales: Vec<f32> =
                rows.chunks_exact(dim).map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0).collect();
            scales.iter().for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
            for (row, s) in rows.chunks_exact(dim).zip(&scales) {
                out.extend(row.iter().map(|v| (v / s).round().clamp(-127.0, 127.0) as i8 as u8));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum_for_every_tail_length() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-5, "n = {n}");
        }
    }

    #[test]
    fn encoded_rows_decode_and_dot_alike_in_every_element_type() {
        let (dim, data) = (5, [0.6f32, -0.8, 0.0, 0.0, 0.0, 0.1, 0.2, -0.3, 0.4, 0.5]);
        let query = [0.5f32, -0.25, 1.0, 0.0, 2.0];
        for el in [ElementType::F32, ElementType::F16, ElementType::Int8] {
            let mut bytes = Vec::new();
            write_rows(&mut bytes, el, dim, &data);
            assert_eq!(bytes.len(), el.block_len(2, dim), "{el}");
            let aligned: Vec<u64> = {
                let mut v = vec![0u64; bytes.len().div_ceil(8)];
                bytemuck::cast_slice_mut::<u64, u8>(&mut v)[..bytes.len()].copy_from_slice(&bytes);
                v
            };
            let rows = Rows::new(bytemuck::cast_slice(&aligned), el, 0, 2, dim);
            assert!(rows.all_finite());
            let tol = if el == ElementType::F32 { 1e-7 } else { 1e-2 };
            let mut out = [0f32; 2];
            rows.dot(&query, &mut out);
            for (r, o) in out.iter().enumerate() {
                let row = rows.row(r, dim);
                for (x, y) in row.iter().zip(&data[r * dim..(r + 1) * dim]) {
                    assert!((x - y).abs() < tol, "{el}: {row:?}");
                }
                assert!((o - dot(&row, &query)).abs() < 1e-5, "{el}: {out:?}");
            }
        }
    }
}
