//! tract's NNEF form of an image encoder, written at bundle build time so that
//! a device skips ONNX parsing, typing and most of the decluttering at start-up.
//!
//! The NNEF file is a derived copy: the ONNX file stays the authority. The
//! manifest records which ONNX file (by sha256) the NNEF was made from, and
//! the loader falls back to the ONNX file whenever the NNEF copy is missing,
//! corrupt, stale or does not load (see `docs/bundle.md`).

use tract_core::ops::nn::GeluExact;
use tract_nnef::framework::Nnef;
use tract_nnef::internal::Registry;
use tract_onnx::prelude::*;

/// tract's NNEF framework with tract-core's operators plus the ones clip-edge
/// registers itself: exact GELU (every ViT), which tract 0.23 can run but has
/// no NNEF serializer for.
pub fn framework() -> Nnef {
    let mut registry = Registry::new("clip_edge");
    registry.register_unit_element_wise("clip_edge_gelu_exact", &GeluExact {});
    tract_nnef::nnef().with_registry(registry)
}

/// Serialises a typed model to an uncompressed NNEF tar archive.
pub fn to_tar(model: &TypedModel) -> TractResult<Vec<u8>> {
    framework().write_to_tar(model, Vec::new())
}

/// Reads an NNEF tar archive (plain or gzip-compressed) into a typed model.
pub fn from_tar(bytes: &[u8]) -> TractResult<TypedModel> {
    let mut reader = bytes;
    framework().model_for_read(&mut reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu_model() -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 4])).expect("source");
        let y = model.wire_node(
            "gelu",
            tract_core::ops::element_wise::ElementWiseOp(Box::new(GeluExact {}), None),
            &[x],
        );
        model.select_output_outlets(&y.expect("gelu")).expect("outputs");
        model
    }

    #[test]
    fn exact_gelu_round_trips() {
        let model = gelu_model();
        let tar = to_tar(&model).expect("write");
        let loaded = from_tar(&tar).expect("read");
        let input = tensor2(&[[-2f32, -0.5, 0.5, 2.0]]);
        let run = |m: TypedModel| {
            let plan = m.into_optimized().expect("optimise").into_runnable().expect("plan");
            plan.run(tvec![input.clone().into()]).expect("run")[0].clone().into_tensor()
        };
        assert_eq!(run(model), run(loaded));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(from_tar(b"not a tar archive").is_err());
    }
}
