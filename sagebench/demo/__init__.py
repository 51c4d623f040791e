"""The embedded benchmark: Fashion-MNIST test split and two small timm ViTs trained by `sagebench train-demo`."""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DATA_FILE = DEMO_DIR / "fashion_mnist_test.parquet"
EDGE_WEIGHTS = DEMO_DIR / "edge.safetensors"
SERVER_WEIGHTS = DEMO_DIR / "server.safetensors"
