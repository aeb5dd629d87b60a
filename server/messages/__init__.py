"""TF Serving's messages ⇄ the serving core, for every transport and tool that speaks them.

gRPC carries these messages; REST prints some of them as JSON and builds its
examples as an ``Input``; warmup replays them; the request log writes them. None
of it depends on how a message arrived, so none of it lives in ``api/``.
"""
