"""The embedded benchmarks: small shipped test splits and timm ViTs trained by `sagebench train-demo`.

``cifar10`` (the default: real RGB photos) and ``fmnist`` (Fashion-MNIST, grayscale).
"""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
# Fashion-MNIST (``--config fmnist``)
DATA_FILE = DEMO_DIR / "fashion_mnist_test.parquet"
EDGE_WEIGHTS = DEMO_DIR / "edge.safetensors"
SERVER_WEIGHTS = DEMO_DIR / "server.safetensors"
# CIFAR-10 (the default benchmark)
CIFAR10_FILE = DEMO_DIR / "cifar10_test.parquet"
CIFAR10_EDGE_WEIGHTS = DEMO_DIR / "cifar10_edge.safetensors"
CIFAR10_SERVER_WEIGHTS = DEMO_DIR / "cifar10_server.safetensors"
