"""pyro-vae: variational autoencoders and normalizing flows as Pyro probabilistic programs."""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

DOCS = ["sphinx>=7", "myst-nb>=1.1", "furo", "sphinx-argparse>=0.4", "ipykernel", "ipywidgets",
        "tensorboard>=2.10"]

setup(
    name="pyro-vae",
    version="0.2.0",
    description="Variational autoencoders and normalizing-flow guides written as Pyro programs",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["pyro_vae", "pyro_vae.*", "inference", "inference.*"]),
    install_requires=[
        # torch 2.14.1 / torchvision 0.29.1 are the newest releases this project is tested
        # with; the upper bounds keep pip from fetching an untested (and multi-GB) release.
        "torch>=2.1,<=2.14.1",
        "torchvision>=0.16,<=0.29.1",
        "pyro-ppl>=1.9",
        "arviz>=0.17",
        "mlxtend>=0.23",
        "numpy",
        "tqdm",
        "matplotlib",
        "pillow",
    ],
    extras_require={
        # TensorBoard event files in RUN_DIR/tb (skipped without it); the tests read them back
        "tensorboard": ["tensorboard>=2.10"],
        # `--tracker mlflow`: runs logged to an MLflow store (the client alone is enough)
        "mlflow": ["mlflow-skinny>=2.0"],
        # the documentation site: sphinx-build -W --keep-going -b html docs docs/_build/html
        "docs": DOCS,
        # the tests read MLflow runs back and build the documentation site (warnings as errors)
        "test": ["pytest>=7", "scipy", "tensorboard>=2.10", "mlflow-skinny>=2.0", *DOCS],
    },
    entry_points={"console_scripts": ["pyro-vae=inference.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
