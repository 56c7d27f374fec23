"""gunicorn settings of the production web process (`make serve`, deploy/Procfile, systemd).

Every value can be changed through the environment, as gunicorn's own variables allow
(GUNICORN_CMD_ARGS), or through the ones read here.
"""

import os

_host_port = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
bind = os.environ.get("BIND", _host_port)
# Threads serve slow clients without a process each; the state lives in the database.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = int(os.environ.get("WEB_TIMEOUT", "60"))
graceful_timeout = 20
# Behind a TLS-terminating proxy on the same host or network: trust its X-Forwarded-*.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = "-"
errorlog = "-"
wsgi_app = "console.wsgi:application"
# gunicornc's control socket: in the data dir (AUTOLOADER_DATA_DIR, default var/), not in
# ~/.gunicorn; GUNICORN_CONTROL_SOCKET moves it.
control_socket = os.environ.get(
    "GUNICORN_CONTROL_SOCKET",
    os.path.join(os.environ.get("AUTOLOADER_DATA_DIR", "var"), "gunicorn.ctl"),
)
