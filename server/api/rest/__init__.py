"""TF Serving's HTTP/REST API (``--rest_api_port``): routes, JSON formats, errors.

``server.py`` runs it on its own thread and event loop; everything else here
is plain blocking code that the thread pool runs.
"""
