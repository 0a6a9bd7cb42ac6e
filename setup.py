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
    packages=["lrp_triton", "lrp_triton.ops", "lrp_triton.modules", "lrp_triton.kernels", "lrp_triton.models"],
    package_dir={
        "lrp_triton": "lrp_triton",
        "lrp_triton.kernels": "kernels",
        "lrp_triton.models": "models",
    },
    install_requires=[
        # torch is not pinned here: install the build you want first (CI: the CPU wheel, torch==2.13.0).
        "torch>=2.4",
        "triton>=3.2; platform_system == 'Linux'",
        "transformers>=5.0,<6",
        "einops>=0.7",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-benchmark>=4"],
    },
)
