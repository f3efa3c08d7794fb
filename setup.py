"""sora_jax: text-to-video diffusion transformers over spacetime patches, in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="sora_jax",
    version="0.1.0",
    description="Text-to-video with a diffusion transformer over spacetime latent patches (JAX/Flax).",
    python_requires=">=3.11",
    packages=find_packages(include=["sora_jax", "sora_jax.*", "configs"]),
    package_data={"sora_jax": ["assets/*", "assets/**/*"]},
    include_package_data=True,
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "tensorflow-datasets>=4.9.10",
        "array_record>=0.8",
        "ml-collections>=1.1",
        "grain>=0.2.18",
        "av>=14",
        "pillow>=10",
        "numpy>=2",
        "clu>=0.0.12",
        "tqdm>=4.66",
        "absl-py>=2",
        "safetensors>=0.4",
        "sentencepiece>=0.2",
        "scipy>=1.11",
        "tensorboardX>=2.6",
        # Every video carries C2PA content credentials (sora_jax/io/provenance.py); pinned
        # below 0.39 because webm sidecars call two functions of its native library directly.
        "c2pa-python>=0.38.1,<0.39",
        "cryptography>=41",
    ],
    extras_require={
        # matplotlib: the tests run the study runners, which plot.
        "test": ["pytest>=8", "pytest-xdist>=3", "chex>=0.1.90", "matplotlib"],
        "notebooks": ["jupyter", "nbclient", "nbformat", "ipykernel", "matplotlib"],
        "experiments": ["matplotlib"],
    },
    entry_points={"console_scripts": ["sora-jax=sora_jax.cli:main"]},
)
