"""Maps the top-level folders onto distinctive import names.

``server/`` installs as ``onnx_serving.server`` (and so on), so nothing named
plainly ``server`` or ``client`` lands in site-packages.
"""

from setuptools import find_packages, setup

FOLDERS = {
    "server": "onnx_serving.server",
    "client": "onnx_serving.client",
    "codec": "onnx_serving.codec",
    "protos": "onnx_serving.protos",
    "migration": "onnx_serving.migration",
    "tune": "onnx_serving.tune",
}

package_dir: dict[str, str] = {}
packages: list[str] = []
for folder, name in FOLDERS.items():
    for sub in ["", *find_packages(folder)]:
        package = f"{name}.{sub}" if sub else name
        packages.append(package)
        package_dir[package] = f"{folder}/{sub.replace('.', '/')}" if sub else folder

setup(packages=packages, package_dir=package_dir)
