"""Online serving: authentication of HTTP requests, request parsing, model loading per replica, prediction
logging and endpoint records. The Ray Serve applications in ``serve_apps/`` are thin shells over this."""
