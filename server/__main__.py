import sys

from onnx_serving.server.cli import main

sys.exit(main())
